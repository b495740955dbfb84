"""Plugin authors: the example package installed with pip, broken entry points, and the docs' snippets.

The example package is installed with ``pip install --no-deps --no-build-isolation --no-index --target``
into a private folder (from a copy, so the build leaves nothing in ``examples/``), and that folder is put
on ``sys.path`` (or PYTHONPATH) only for the tests that want it. Installing into the shared venv instead
would change what every other test sees (the registry snapshot test lists the registered names) and
would need an uninstall that a crashed run never does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gradprune import plugins
from gradprune.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes/tiny.yaml")
EXAMPLE = ROOT / "examples/plugin_package"
DIST = "gradprune-example-plugins"


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """The example package, installed by pip into a private --target folder."""
    root = tmp_path_factory.mktemp("example_plugin")
    src = root / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--quiet", "--target", str(root / "site"), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "site"


@pytest.fixture
def fresh_registries(monkeypatch):
    """Registries that read entry points again (and forget what this test adds afterwards)."""
    monkeypatch.setenv("COLUMNS", "250")  # rich tables: one row per line
    with contextlib.ExitStack() as stack:
        for reg in plugins.FAMILIES.values():
            stack.enter_context(reg.scoped(reread_entry_points=True))
        yield
    for name in [m for m in sys.modules if m.startswith(("gradprune_example_plugins", "broken_plugin"))]:
        del sys.modules[name]


@pytest.fixture
def installed(example_site, monkeypatch, fresh_registries) -> Path:
    """This process sees the installed example package."""
    monkeypatch.syspath_prepend(str(example_site))
    return example_site


def _row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if re.search(rf"\b{name}\b", line))


def test_example_package_runs_the_tiny_recipe(installed, recipe_args, tmp_path):
    assert main(["run", TINY, *recipe_args, "importance.name=grad_abs", "~importance.params",
                 "importance.params.power=2", "stats.collectors=[grad_norm, grad_l1]"]) == 0
    record = json.loads((tmp_path / "out/run.json").read_text())
    assert record["recipe"]["importance"] == {"name": "grad_abs", "params": {"power": 2}}
    assert len(record["stats"]["per_layer"]["grad_l1"]) == 4 and "grad_l1_ratio" in record["metrics"]
    assert abs(record["metrics"]["pruning_ratio"] - 0.2) < 0.02
    assert "grad_l1" in pd.read_csv(tmp_path / "out/layers.csv").columns


def test_ls_shows_the_plugins_with_their_distribution(installed, capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in ("grad_abs", "grad_l1"):
        assert f"entry point ({DIST})" in _row(out, name)
    assert "gradprune" in _row(out, "taylor")  # the built-ins are still there


def test_a_fresh_process_sees_the_installed_package(example_site):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(example_site), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "250"}
    r = subprocess.run([sys.executable, "-m", "gradprune.cli", "ls", "collectors"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"entry point ({DIST})" in _row(r.stdout, "grad_l1") and "Mean absolute gradient" in r.stdout


def test_params_of_an_entry_point_plugin_are_validated(installed, capfd):
    assert main(["validate", TINY, "importance.name=grad_abs", "~importance.params", "importance.params.power=-1"]) == 2
    assert "importance.params.power" in capfd.readouterr().err
    assert main(["validate", TINY, "importance.name=grad_abs", "~importance.params", "importance.params.pwr=1"]) == 2
    assert "importance.params.pwr: unknown key" in capfd.readouterr().err


# --------------------------------------------------------------------------------------------------
# broken plugins


BROKEN_ENTRY_POINTS = {
    "gradprune.importance": {"missing_module": "no_such_module_xyz:Thing",
                             "needs_a_library": "broken_plugin_import:Thing"},
    "gradprune.collectors": {"crashes_on_import": "broken_plugin_crash:Collector"},
    "gradprune.normalizers": {"wrong_base": "collections:OrderedDict"},
    "gradprune.predictors": {"broken_predictor": "broken_plugin_import:Predictor"},
}


@pytest.fixture
def broken_site(tmp_path, installed, monkeypatch) -> Path:
    """A second distribution whose entry points fail in different ways, beside the working example."""
    site = tmp_path / "broken_site"
    dist = site / "broken_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{n} = {v}\n" for n, v in eps.items()) for group, eps in BROKEN_ENTRY_POINTS.items()))
    (site / "broken_plugin_import.py").write_text("import libfoo_that_is_not_installed  # noqa\n")
    (site / "broken_plugin_crash.py").write_text("raise RuntimeError('plugin bug at import time')\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_broken_plugins_are_named_and_break_nothing_else(broken_site, recipe_args, tmp_path, capfd):
    assert main(["ls"]) == 0
    out = capfd.readouterr().out
    for name in ("missing_module", "needs_a_library", "crashes_on_import", "wrong_base", "broken_predictor"):
        row = _row(out, name)
        assert "entry point (broken-plugins)" in row and "[failed to load]" in row, row
    assert "libfoo_that_is_not_installed" in _row(out, "needs_a_library")
    assert "plugin bug at import time" in _row(out, "crashes_on_import")
    assert "not a subclass of Normalizer" in _row(out, "wrong_base")
    assert "[failed to load]" not in _row(out, "grad_abs")

    # the working plugins still run
    assert main(["run", TINY, *recipe_args, "importance.name=grad_abs", "~importance.params",
                 "stats.collectors=[grad_norm, grad_l1]"]) == 0
    # picking a broken one fails by name, as bad input
    capfd.readouterr()
    assert main(["validate", TINY, "importance.name=needs_a_library", "~importance.params"]) == 2
    err = capfd.readouterr().err
    assert "'needs_a_library'" in err and "failed to load" in err and "Traceback" not in err


def test_a_broken_predictor_is_skipped_by_analyze(broken_site, tmp_path):
    csv = tmp_path / "search_results.csv"
    _planted().to_csv(csv, index=False)
    assert main(["analyze", str(csv), "--output_dir", str(tmp_path / "analysis")]) == 0
    report = (tmp_path / "analysis/correlation_report.txt").read_text()
    assert "Skipped predictors: broken_predictor" in " ".join(report.split())


def _planted(n: int = 12) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(1)
    g = rng.uniform(2, 40, n)
    return pd.DataFrame({"success": True, "grad_norm_ratio": g, "grad_std_ratio": rng.uniform(1, 5, n),
                         "acc_mean": 0.7 - 0.004 * g + rng.normal(0, 0.005, n)})


# --------------------------------------------------------------------------------------------------
# the snippets of docs/plugins.md


def _snippets() -> dict[str, str]:
    text = (ROOT / "docs/plugins.md").read_text(encoding="utf-8")
    return dict(re.findall(r"<!-- snippet: (\w+) -->\s*```python\n(.*?)```", text, flags=re.S))


SNIPPET_NAMES = {"importance": "grad_l1", "normalizers": "median", "collectors": "grad_l1",
                 "predictors": "first_column", "data": "lines", "recovery": "norm_tuning",
                 "loggers": "folder"}


def test_docs_have_one_short_snippet_per_family():
    snippets = _snippets()
    assert set(snippets) == set(plugins.FAMILIES)
    for family, code in snippets.items():
        lines = [line for line in code.splitlines() if line.strip()]
        assert len(lines) <= 15, f"{family}: {len(lines)} lines"


def test_docs_snippets_work(fresh_registries, recipe_args, corpus_file, tmp_path):
    for family, code in _snippets().items():
        namespace: dict = {"__name__": f"docs_snippet_{family}"}
        exec(compile(code, f"docs/plugins.md:{family}", "exec"), namespace)  # noqa: S102 - our own docs
        reg = plugins.FAMILIES[family]
        reg.get(reg.names()[0])  # resolves the family's lazy base class
        base = reg.base_cls
        (cls,) = [v for v in namespace.values() if isinstance(v, type) and v.__module__ == namespace["__name__"]
                  and issubclass(v, base)]
        reg.add(SNIPPET_NAMES[family], cls, origin="docs")
    assert main(["run", TINY, *recipe_args, "importance.name=grad_l1", "~importance.params",
                 "normalizer.name=median", "stats.collectors=[grad_norm, grad_l1]",
                 "calibration.dataset.name=lines", f"calibration.dataset.path={corpus_file}",
                 "recovery.name=norm_tuning", "recovery.params.max_steps=2", "recovery.params.batch_size=4",
                 "recovery.params.cutoff_len=32", "recovery.dataset.name=lines",
                 f"recovery.dataset.path={corpus_file}"]) == 0
    record = json.loads((tmp_path / "out/run.json").read_text())
    assert "grad_l1_ratio" in record["metrics"] and record["calibration"]["windows"]["source"] == "LinesFile"
    assert record["recovery"]["method"] == "norm_tuning" and record["metrics"]["recovery_steps"] == 2
    csv = tmp_path / "search_results.csv"
    _planted().to_csv(csv, index=False)
    assert main(["analyze", str(csv), "--output_dir", str(tmp_path / "analysis")]) == 0
    model = json.loads((tmp_path / "analysis/prediction_model.json").read_text())
    # candidates are named "<predictor> on <feature role>"
    assert "first_column" in {c["predictor"].split("(")[0].split(" on ")[0] for c in model["candidates"]}
