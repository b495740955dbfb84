"""``gradprune analyze`` and ``gradprune predict``: compute in memory, then write every output atomically.

Both return an exit code; anything the user did wrong raises GradpruneError (the CLI prints it as one
line and exits 2) before a single file is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from gradprune.errors import GradpruneError
from gradprune.files import atomic_write_text, failures_named, write_whole
from gradprune.outputs import ANALYSIS_FILES, check_writable_dir, refuse_existing

if TYPE_CHECKING:
    from gradprune.analysis.pipeline import Analysis

MAX_SHOWN_FEATURES = 4  # feature columns printed by predict (all of them go to --output)
OUTPUTS = ANALYSIS_FILES
PAPER = "paper"  # the folder of LaTeX tables, macros, paragraphs and PDF figures


def _check_output_dir(out: Path, overwrite: bool) -> None:
    refuse_existing(out, OUTPUTS, overwrite, f"{out}: is a file; expected an output folder for the analysis",
                    f"{out} already holds analysis outputs ({{existing}}); pass --overwrite to replace them, "
                    "or choose another --output_dir")


def analysis_files(a: Analysis, paper: bool = True) -> dict[str, bytes | str]:
    """Every output of an analysis, rendered in memory (name → content; ``paper/…`` names are the files of
    the paper folder)."""
    from gradprune.analysis.correlations import correlations_frame
    from gradprune.analysis.export import analysis_json
    from gradprune.analysis.figures import render_figures
    from gradprune.analysis.report import render_report
    from gradprune.record import clean

    text, markdown = render_report(a)
    frames = [correlations_frame("target", a.target_corrs), correlations_frame("heatmap_pairs", a.pair_corrs)]
    doc = clean(analysis_json(a))
    files: dict[str, bytes | str] = {
        "correlation_report.txt": text,
        "correlation_report.md": markdown,
        "prediction_model.json": a.model.model_dump_json(indent=2) + "\n",
        "analysis.json": json.dumps(doc, indent=2) + "\n",
        **render_figures(a),
    }
    if paper:
        from gradprune.analysis.paper import paper_files

        files.update({f"{PAPER}/{name}": content for name, content in paper_files(a, doc).items()})
    if a.within is not None:
        frames.append(correlations_frame(f"within_{a.within.grouping.column}", a.within.pooled))
        frames += [correlations_frame(f"{a.within.grouping.column}={lv.label}", lv.corrs) for lv in a.within.levels]
    if a.replicates is not None:
        frames += [correlations_frame("config_means", a.replicates.between),
                   correlations_frame("within_config", a.replicates.within)]
        files["per_config.csv"] = a.replicates.per_config.to_csv(index=False)
        if a.best_settings is not None:
            files["best_settings.csv"] = a.best_settings.table.to_csv(index=False)
    files["correlations.csv"] = pd.concat(frames, ignore_index=True).to_csv(index=False)
    return files


def analyze_command(csv: str | Path | Sequence[str | Path], target: str = "acc_mean",
                    output_dir: str | Path | None = None, seed: int = 0, overwrite: bool = False,
                    by: str | None = None, paper: bool = True, include: Sequence[str] = ()) -> int:
    """Analyse one or more search CSVs and write the figures, report, tables, prediction model and (with
    ``paper``) the paper/ folder to ``output_dir`` (default: beside the first CSV). ``by``: see
    :func:`gradprune.analysis.pipeline.run_analysis`; ``include``: numeric columns of unknown meaning to use
    as statistics."""
    from gradprune.analysis.key_findings import key_findings
    from gradprune.analysis.loading import require_file
    from gradprune.analysis.pipeline import run_analysis

    csvs = [Path(csv)] if isinstance(csv, (str, Path)) else [Path(c) for c in csv]
    for c in csvs:
        require_file(c)  # a wrong path is the first thing to tell, even beside old outputs
    out = Path(output_dir) if output_dir is not None else csvs[0].parent
    _check_output_dir(out, overwrite)  # before the work, so a refusal costs nothing
    check_writable_dir(out, "--output_dir")
    a = run_analysis(csvs, target, seed, by, include)
    files = analysis_files(a, paper)
    _check_output_dir(out, overwrite)  # and again: another process may have written meanwhile
    # all files or none (names may hold a folder, paper/…); earlier outputs this analysis no longer writes
    # (e.g. per_config.csv of a CSV with replicates) go too: they would mislead
    write_whole(out, {n: c.encode("utf-8") if isinstance(c, str) else c for n, c in files.items()}, OUTPUTS,
                last="analysis.json")
    written = {n.split("/")[0] for n in files}
    from gradprune.tracking import attach_analysis

    attach_analysis(a.sources, out, sorted(written))
    _print_summary(out, sorted(written), key_findings(a))
    return 0


def _print_summary(out: Path, files: list[str], findings: list[str]) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False)
    console.print(Text(f"wrote {len(files)} files to {out}: " + ", ".join(sorted(files)), style="bold"))
    for item in findings:
        console.print(Text("• " + item))


def _check_predict_output(output: Path, sources: list[Path]) -> None:
    """--output must be a file path that is none of the files being read (it would replace one)."""
    if output.is_dir():
        raise GradpruneError(f"--output {output}: is a directory; expected the path of a CSV file to write")
    folder = output.absolute().parent
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise GradpruneError(f"--output {output}: its folder {str(folder)!r} {what}; create the folder first or "
                             f"choose another --output")
    check_writable_dir(folder, "--output")
    for src in sources:
        if output.exists() and src.exists() and output.resolve() == src.resolve():
            raise GradpruneError(f"--output {output}: is also an input of this command; writing the predictions "
                                 "there would replace it. Choose another --output file")


def predict_command(model_json: str | Path, inputs: Sequence[str | Path], output: str | Path | None = None) -> int:
    """Apply a prediction_model.json to run.json files or CSVs of runs; print a table, optionally write a CSV."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from gradprune.analysis.predict import fmt_cell, predict_runs, read_inputs
    from gradprune.prediction.model import load_model, stated_formula

    if output is not None:
        _check_predict_output(Path(output), [Path(model_json), *map(Path, inputs)])
    model = load_model(model_json)
    table, warnings = predict_runs(model, read_inputs(inputs))
    applied = stated_formula(model)
    if applied != model.formula:  # a description edited by hand: show what is applied, and say so
        warnings.insert(0, f"{model_json}: its formula ({model.formula}) does not match its coefficients; the "
                           "formula shown below is the one applied")
    err = Console(stderr=True, highlight=False)
    err.soft_wrap = not err.is_terminal  # one line in a log; word-wrapped on a terminal
    for w in warnings:
        err.print(Text("warning: ", style="bold yellow") + Text(w))
    out = Console(highlight=False)
    m = model.metrics
    judged = ("" if m.permutation_p is None else
              f", nested {m.r2_cv_nested:.3f}, permutation p = {m.permutation_p:.2g}"
              + (": no better than chance" if m.permutation_p >= 0.05 else ""))
    out.print(Text(f"{applied}  (cross-validated R² = {m.r2_cv:.3f}, {m.cv}{judged})"))
    view = Table()
    # a wide model's feature values would squeeze the table unreadable: they stay in --output
    shown = [c for c in table.columns if len(model.features) <= MAX_SHOWN_FEATURES or c not in model.features]
    for col in shown:  # Text, not markup: file names and feature names may hold [brackets]
        view.add_column(Text(str(col)), justify="left" if col == "input" else "right", overflow="fold")
    for row in table[shown].itertuples(index=False):
        view.add_row(*(Text(fmt_cell(v)) for v in row))
    out.print(view)
    if output is not None:
        text = table.to_csv(index=False)
        with failures_named(output, len(text.encode())):
            atomic_write_text(output, text)
    return 0
