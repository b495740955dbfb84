"""The paper/ folder: LaTeX that compiles with a real pdflatex, every number a macro whose value equals the
analysis JSON (and correlations.csv), vector PDF figures at one- and two-column width with fonts ≥ 7 pt
and no overlapping tick labels, and strings with LaTeX specials escaped."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradprune.analysis.command import analyze_command
from gradprune.analysis.latex import escape, fmt_value

MACRO_DEF = re.compile(r"^\\newcommand\{\\(gp[A-Za-z]+)\}\{(.*)\}$")


def paper_frame(seed: int = 4) -> pd.DataFrame:
    """2 ratios × 6 settings × 2 seeds; per-task acc / acc_norm with dense values; a column name with
    digits and underscores; acc_mean falls with grad_norm_ratio within each ratio."""
    rng = np.random.default_rng(seed)
    rows = []
    for j, ratio in enumerate((0.2, 0.4)):
        for cid, (s, k) in enumerate([(s, k) for s in (16, 64, 256) for k in (128, 512)]):
            for rep in range(2):
                g = rng.uniform(2, 8)
                acc = 0.65 - 0.06 * j - 0.01 * g + rng.normal(0, 0.003)
                rows.append({"trial": len(rows), "config_id": f"{j}-{cid}", "seed": rep, "success": True,
                             "taylor_seq_len": s, "taylor_num_samples": k, "pruning_ratio": ratio,
                             "grad_norm_ratio": g, "grad_q90_ratio": rng.uniform(1, 3), "acc_mean": acc,
                             "acc_boolq": acc + 0.02, "acc_piqa": acc - 0.01, "acc_norm_piqa": acc + 0.01,
                             "dense_acc_boolq": 0.8, "dense_acc_piqa": 0.75, "dense_acc_norm_piqa": 0.77})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    paper_frame().to_csv(out / "search_results.csv", index=False)
    analyze_command(out / "search_results.csv")
    return out


def _macros(paper: Path) -> dict[str, str]:
    return {m[1]: m[2] for line in (paper / "numbers.tex").read_text().splitlines() if (m := MACRO_DEF.match(line))}


def _body_files(paper: Path) -> list[Path]:
    return sorted([*paper.glob("tables/*.tex"), *paper.glob("text/*.tex")])


def test_layout(analyzed):
    paper = analyzed / "paper"
    names = sorted(str(p.relative_to(paper)) for p in paper.rglob("*") if p.is_file())
    assert {"numbers.tex", "numbers.json", "tables/correlations.tex", "tables/predictors.tex", "tables/settings.tex",
            "tables/tasks.tex", "tables/within.tex", "text/method.tex", "text/results.tex",
            "figures/scatter_1col.pdf", "figures/scatter_2col.pdf", "figures/heatmap_1col.pdf",
            "figures/heatmap_2col.pdf"} <= set(names)
    # a document that inputs every .tex in name order meets numbers.tex first
    assert sorted(str(p) for p in paper.rglob("*.tex"))[0].endswith("numbers.tex")
    assert (analyzed / "analysis.json").exists()


def test_every_number_of_the_text_and_tables_is_a_macro(analyzed):
    paper = analyzed / "paper"
    defined = _macros(paper)
    assert len(defined) > 50
    for f in _body_files(paper):
        tex = f.read_text()
        used = set(re.findall(r"\\(gp[A-Za-z]+)", tex))
        assert used <= defined.keys(), f"{f.name}: undefined {used - defined.keys()}"
        body = re.sub(r"(?m)^%.*$", "", tex)
        body = re.sub(r"\\texttt\{[^{}]*(\{\}[^{}]*)*\}", "", body)  # names may hold digits
        body = re.sub(r"R\^(2|\{2\})", "R", body)  # the notation R², not a number
        assert not re.search(r"\d", body), f"{f.name} holds a number that is not a macro: " + \
            re.search(r".{0,40}\d.{0,40}", body)[0]


def _at(doc, path: str):
    for part in path.split("/"):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def _plain(tex: str) -> str:
    return re.sub(r"^\\ensuremath\{(.*)\}$", r"\1", tex)


def _as_float(tex: str) -> float:
    return float(_plain(tex).replace("<", ""))


def test_macro_values_equal_the_analysis_json_and_correlations_csv(analyzed):
    paper = analyzed / "paper"
    doc = json.loads((analyzed / "analysis.json").read_text())
    index = json.loads((paper / "numbers.json").read_text())
    defined = _macros(paper)
    checked = 0
    for name, entry in index.items():
        assert defined[name] == entry["tex"]
        if not entry["source"]:
            continue
        value = _at(doc, entry["source"])
        assert value == pytest.approx(entry["value"]), name
        text = _plain(entry["tex"])
        if text.startswith("<"):
            assert value < _as_float(text), name
        elif re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", text):
            shown = _as_float(text)
            decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 0
            assert abs(shown - value) <= 0.5 * 10 ** -decimals + 1e-12 or "e" in text, (name, text, value)
            checked += 1
    assert checked > 40
    # independently: the correlation macros against correlations.csv (written by the report's code path)
    csv = pd.read_csv(analyzed / "correlations.csv")
    rows = csv[csv["scope"] == "config_means"].set_index("x")
    for feature in ("grad_norm_ratio", "grad_q90_ratio"):
        macro = next(n for n, e in index.items() if e["source"] == f"correlations/{feature}/spearman")
        assert _as_float(defined[macro]) == pytest.approx(rows.loc[feature, "spearman"], abs=0.005)


def _pdf_streams(data: bytes) -> list[bytes]:
    out = []
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            out.append(zlib.decompress(m[1]))
        except zlib.error:
            out.append(m[1])
    return out


@pytest.mark.parametrize("name", ["scatter_1col", "scatter_2col", "heatmap_1col", "heatmap_2col"])
def test_figures_are_vector_pdf_at_column_width(analyzed, name):
    data = (analyzed / "paper" / "figures" / f"{name}.pdf").read_bytes()
    assert data.startswith(b"%PDF")
    assert b"/Subtype /Image" not in data  # not one embedded picture
    content = b"\n".join(_pdf_streams(data))
    paths = len(re.findall(rb"\s(?:re|l|c)\n", content))
    assert paths > 20, f"{name}: {paths} path operators"
    box = [float(v) for v in re.search(rb"/MediaBox \[ ?([\d.\s]+)\]", data)[1].split()]
    assert box[2] - box[0] == pytest.approx(72 * (3.3 if "1col" in name else 7.0), abs=0.5)


@pytest.fixture(scope="module")
def analysis(analyzed):
    from gradprune.analysis.pipeline import run_analysis

    return run_analysis(analyzed / "search_results.csv", "acc_mean", 0)


@pytest.mark.parametrize("width", [3.3, 7.0])
def test_figure_fonts_and_ticks(analysis, width):
    from matplotlib.text import Text

    from gradprune.analysis.figures import overlapping_tick_labels, thin_ticks
    from gradprune.analysis.paper_figures import heatmap_figure, scatter_figure

    for fig in (scatter_figure(analysis, width), heatmap_figure(analysis, width)):
        thin_ticks(fig)
        fig.canvas.draw()
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        assert sizes and min(sizes) >= 7
        assert overlapping_tick_labels(fig) == []


def test_escape_and_number_format():
    assert escape("grad_norm_ratio") == r"grad\_norm\_ratio"
    assert escape("a&b%c$d#e{f}g~h^i\\j") == (r"a\&b\%c\$d\#e\{f\}g\textasciitilde{}h\textasciicircum{}i"
                                               r"\textbackslash{}j")
    assert escape("ρ ≈ −0.8 × é") == r"$\rho$ $\approx$ $-$0.8 $\times$ e"
    assert fmt_value(-0.0004, 2) == "-0.0004" and fmt_value(0.0, 2) == "0.00" and fmt_value(-0.81, 2) == "-0.81"


def test_the_paper_compiles_with_pdflatex(analyzed, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-base texlive-latex-recommended, "
                    "as .ci/run does)")
    paper = analyzed / "paper"
    doc = ["\\documentclass{article}", "\\usepackage{booktabs}", "\\usepackage{graphicx}", "\\begin{document}"]
    doc += [f"\\input{{{p}}}" for p in sorted(paper.rglob("*.tex"))]
    doc += [f"\\includegraphics{{{p}}}" for p in sorted(paper.rglob("*.pdf"))]
    doc.append("\\end{document}")
    (tmp_path / "doc.tex").write_text("\n".join(doc) + "\n")
    res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    errors = [line for line in res.stdout.splitlines() if line.startswith("!")]
    assert res.returncode == 0, errors or res.stdout[-2000:]
    assert "Undefined control sequence" not in res.stdout
    assert (tmp_path / "doc.pdf").stat().st_size > 10_000
    if shutil.which("pdftoppm"):  # the first page renders (a human looks at it; here: it is not blank)
        subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", "doc.pdf", "page"], cwd=tmp_path,
                       check=True, timeout=120)
        from matplotlib.image import imread

        page = imread(next(tmp_path.glob("page*.png")))
        assert (page[..., :3] < 0.5).mean() > 0.01  # ink on the page
