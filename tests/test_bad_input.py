"""Bad input across every command: exit 2, one clear line naming the input, no traceback, nothing written.

Each case builds its bad input in the test's ``tmp_path`` and runs ``gradprune.cli.main`` in-process.
``main`` returns 2 only for a GradpruneError (argparse usage errors exit 2 through SystemExit); any other
exception propagates and fails the case. stderr is captured at the file-descriptor level, so library
loggers that hold the real stderr are checked too. Every file under ``tmp_path`` (the output dirs
included) is snapshotted before and after: a refused command writes and overwrites nothing.

``GRADPRUNE_BAD_INPUT_LOG=<file>`` appends ``case-id<TAB>message`` per case (the list in the docs/report).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gradprune.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes/tiny.yaml")


# --------------------------------------------------------------------------------------------------
# shared, expensive inputs (built once per module)


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory, model_dir, corpus_file) -> Path:
    """A pruned checkpoint (safetensors + plan.json) whose layers keep different counts."""
    from gradprune.recipe import load_recipe
    from gradprune.record import write_output
    from gradprune.run import run_experiment

    out = tmp_path_factory.mktemp("pruned_run")
    recipe = load_recipe(TINY, [f"model.name_or_path={model_dir}", "calibration.dataset.name=text_file",
                                f"calibration.dataset.path={corpus_file}", "calibration.num_samples=8",
                                "calibration.seq_len=16", "calibration.batch_size=4", "eval.run=none",
                                "pruning.attention_layers=[0,4]", "pruning.mlp_layers=[0,4]", "pruning.ratio=0.3"])
    write_output(run_experiment(recipe, keep_model=True), out, save_model=True)
    manifest = json.loads((out / "model/gradprune_checkpoint.json").read_text())
    assert not manifest["config_rewritten"], "the fixture needs a plan with per-layer shapes"
    return out / "model"


def planted_frame(n: int = 12) -> pd.DataFrame:
    """A small search table where acc_mean falls with grad_norm_ratio."""
    import numpy as np

    rng = np.random.default_rng(0)
    g = rng.uniform(2, 40, n)
    return pd.DataFrame({"trial": range(n), "success": True, "taylor_seq_len": rng.choice([16, 32, 64], n),
                         "grad_norm_ratio": g, "grad_max_ratio": rng.uniform(1, 9, n),
                         "acc_mean": 0.7 - 0.004 * g + rng.normal(0, 0.005, n)})


@pytest.fixture(scope="module")
def prediction_model(tmp_path_factory) -> Path:
    """A real prediction_model.json written by ``gradprune analyze``."""
    d = tmp_path_factory.mktemp("analysis")
    planted_frame().to_csv(d / "search_results.csv", index=False)
    assert main(["analyze", str(d / "search_results.csv"), "--output_dir", str(d / "out")]) == 0
    return d / "out/prediction_model.json"


# --------------------------------------------------------------------------------------------------
# the per-case environment


@dataclass
class Env:
    """Paths and writers a case uses to build its bad input (all under the test's tmp_path)."""

    tmp: Path
    recipe_args: list[str]
    model_dir: Path
    corpus_file: Path
    pruned_dir: Callable[[], Path]
    prediction_model: Callable[[], Path]

    def write(self, name: str, content: str | bytes) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
        return p

    def run(self, *extra: str, recipe: str | Path = TINY) -> list[str]:
        return ["run", str(recipe), *self.recipe_args, *extra]

    def model_copy(self, name: str = "model") -> Path:
        d = self.tmp / name
        shutil.copytree(self.model_dir, d)
        return d

    def search(self, **spec) -> list[str]:
        base = {"base": TINY, "overrides": [o for o in self.recipe_args if not o.startswith("output.dir=")],
                "grid": {"pruning.ratio": [0.1, 0.2]}, "output_dir": str(self.tmp / "search")}
        base.update(spec)
        base = {k: v for k, v in base.items() if v is not None}
        return ["search", str(self.write("search.yaml", yaml.safe_dump(base)))]

    def csv(self, frame: pd.DataFrame | str | bytes, name: str = "search_results.csv") -> Path:
        if isinstance(frame, pd.DataFrame):
            frame.to_csv(self.tmp / name, index=False)
            return self.tmp / name
        return self.write(name, frame)

    def model_json(self, **changes) -> Path:
        obj = json.loads(self.prediction_model().read_text())
        obj.update(changes)
        obj = {k: v for k, v in obj.items() if v is not None}
        return self.write("prediction_model.json", json.dumps(obj))

    def runs_csv(self, frame: pd.DataFrame | None = None) -> Path:
        return self.csv(planted_frame(3) if frame is None else frame, "runs.csv")


@dataclass(frozen=True)
class Case:
    """One bad input: how to build the command, and what its one-line message must contain."""

    id: str
    build: Callable[[Env], list[str]]
    expect: tuple[str, ...]


def _flag(frame: pd.DataFrame, **cols) -> pd.DataFrame:
    return frame.assign(**cols)


def _pruned_copy(env: Env) -> Path:
    d = env.tmp / "pruned"
    shutil.copytree(env.pruned_dir(), d)
    return d


def _edit_plan(env: Env, edit: Callable[[dict], None]) -> Path:
    d = _pruned_copy(env)
    plan = json.loads((d / "plan.json").read_text())
    edit(plan)
    (d / "plan.json").write_text(json.dumps(plan))
    return d


def _drop_one_channel(plan: dict) -> None:
    lp = next(lp for lp in plan["layers"] if lp.get("mlp_kept"))
    lp["mlp_kept"] = lp["mlp_kept"][:-1]


def _index_out_of_range(plan: dict) -> None:
    plan["layers"][0]["attn_kept"] = [0, 7]


def _corrupt_weights(env: Env) -> Path:
    d = env.model_copy()
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return d


def _no_weights(env: Env) -> Path:
    d = env.model_copy()
    (d / "model.safetensors").unlink()
    return d


def _no_tokenizer(env: Env) -> Path:
    d = env.tmp / "no_tokenizer"
    d.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(env.model_dir / f, d / f)
    return d


def _vision_model(env: Env) -> Path:
    from transformers import ViTConfig

    d = env.tmp / "vit"
    ViTConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=37).save_pretrained(d)
    return d


def _occupied_run_dir(env: Env) -> list[str]:
    env.write("out/run.json", '{"metrics": {}}\n')
    env.write("out/layers.csv", "layer\n0\n")
    return env.run("pruning.ratio=0.4")


def _other_search(env: Env) -> list[str]:
    env.write("search/search.json", json.dumps({"fingerprint": "0123456789abcdef"}))
    env.write("search/search_results.csv", "trial,success\n0,True\n")
    return env.search()


def _occupied_analysis(env: Env) -> list[str]:
    csv = env.csv(planted_frame())
    env.write("prediction_model.json", "{}")
    return ["analyze", str(csv)]


def _predict(env: Env, model: Path | None = None, *inputs: Path, output: Path | None = None) -> list[str]:
    args = ["predict", str(model or env.prediction_model()), *(str(i) for i in inputs or [env.runs_csv()])]
    return args + (["--output", str(output)] if output else [])


def _feature(env: Env) -> str:
    return json.loads(env.prediction_model().read_text())["features"][0]


def _edited_model(env: Env, edit: Callable[[dict], None]) -> Path:
    obj = json.loads(env.prediction_model().read_text())
    edit(obj)
    return env.write("prediction_model.json", json.dumps(obj))  # NaN is written as JSON's NaN


def _triple_coefficients(m: dict) -> None:
    m["coefficients"] = {k: 3 * v for k, v in m["coefficients"].items()}


def _bad_params(m: dict) -> None:  # edited consistently with the exported candidate's label, but unknown
    m["params"] = {"alpah": 1}
    m["candidates"][0]["predictor"] = f"{m['predictor']}(alpah=1)"


def _other_predictor(m: dict) -> None:
    assert m["isotonic"] is None, "the fixture's model is linear"
    m["predictor"] = "ridge" if m["predictor"] != "ridge" else "ols"


def _zero_scale(m: dict) -> None:
    m["standardisation"]["scales"] = dict.fromkeys(m["standardisation"]["scales"], 0.0)


def _decimal_comma(env: Env) -> list[str]:
    text = planted_frame().to_csv(index=False).splitlines()
    head, rows = text[0].split(","), [r.split(",") for r in text[1:]]
    rows[2][head.index("acc_mean")] = '"0,7520"'
    return ["analyze", str(env.csv("\n".join([text[0], *(",".join(r) for r in rows)]) + "\n"))]


def _search_recipe_as_base(env: Env) -> list[str]:
    inner = env.search(output_dir=str(env.tmp / "inner"))[1]
    return env.search(base=inner)


def _relative_corpus(env: Env) -> list[str]:
    os.chdir(env.tmp)  # the env fixture restores the working directory
    return env.run("calibration.dataset.path=data/nope.txt")


BAD_YAML = "model: {name_or_path: embedded\ncalibration: [1, 2\n"

CASES = [
    # -- run: the recipe file ---------------------------------------------------------------------
    Case("run-yaml-malformed", lambda e: e.run(recipe=e.write("r.yaml", BAD_YAML)), ("r.yaml", "is not valid YAML")),
    Case("run-yaml-empty", lambda e: e.run(recipe=e.write("r.yaml", "")), ("r.yaml", "is empty", "mapping")),
    Case("run-yaml-list", lambda e: e.run(recipe=e.write("r.yaml", "- model\n- pruning\n")),
         ("r.yaml", "expected a mapping of sections, got list")),
    Case("run-recipe-missing", lambda e: e.run(recipe=e.tmp / "nope.yaml"), ("nope.yaml", "does not exist")),
    Case("run-recipe-is-dir", lambda e: e.run(recipe=e.tmp), ("is a directory; expected a YAML file",)),
    Case("run-recipe-not-text", lambda e: e.run(recipe=e.write("r.yaml", b"\xff\xfe\x00\x81 binary")),
         ("cannot read recipe file", "r.yaml")),
    # -- run: keys, types, ranges -----------------------------------------------------------------
    Case("run-unknown-section", lambda e: e.run(recipe=e.write("r.yaml", "modle: {dtype: float32}\n")),
         ("modle: unknown key", "Did you mean 'model'")),
    Case("run-unknown-nested-key", lambda e: e.run(recipe=e.write("r.yaml", "calibration: {seqlen: 8}\n")),
         ("calibration.seqlen: unknown key", "Did you mean 'seq_len'")),
    Case("run-unknown-plugin-param", lambda e: e.run("importance.params.ordr=first"),
         ("importance.params.ordr: unknown key",)),
    Case("run-unknown-key-override", lambda e: e.run("eval.tasks_dir=x"), ("eval.tasks_dir: unknown key", "'task_dir'")),
    Case("run-wrong-type", lambda e: e.run("calibration.seq_len=abc"), ("calibration.seq_len", "valid integer", "'abc'")),
    Case("run-wrong-type-list", lambda e: e.run("stats.collectors=grad_norm"), ("stats.collectors", "valid list")),
    Case("run-ratio-out-of-range", lambda e: e.run("pruning.ratio=1.5"), ("pruning.ratio", "less than 1", "1.5")),
    Case("run-ratio-nan", lambda e: e.run("pruning.ratio=.nan"), ("pruning.ratio", "finite number", "nan")),
    Case("run-seed-negative", lambda e: e.run("calibration.seed=-5"),
         ("calibration.seed", "greater than or equal to 0", "-5")),
    Case("run-limit-inf", lambda e: e.run("eval.limit=.inf"), ("eval.limit", "finite number", "inf")),
    Case("run-worker-launched-strategy", lambda e: e.run("trainer.strategy=ddp_spawn"),
         ("trainer.strategy", "ddp_spawn", "torchrun")),
    Case("run-batch-size-zero", lambda e: e.run("calibration.batch_size=0"), ("calibration.batch_size", "greater than 0")),
    Case("run-bad-choice", lambda e: e.run("pruning.scope=everywhere"), ("pruning.scope", "'global' or 'local'")),
    Case("run-layer-range-reversed", lambda e: e.run("pruning.attention_layers=[3, 1]"),
         ("pruning.attention_layers", "start < end")),
    Case("run-nothing-to-prune", lambda e: e.run("pruning.prune_attention=false", "pruning.prune_mlp=false"),
         ("nothing to prune",)),
    Case("run-override-without-equals", lambda e: e.run("pruning.ratio"), ("'pruning.ratio'", "has no '='")),
    Case("run-override-into-value", lambda e: e.run("pruning.ratio.max=1"), ("pruning.ratio is a value, not a section",)),
    # -- run: plugins -----------------------------------------------------------------------------
    Case("run-unknown-normalizer", lambda e: e.run("normalizer.name=zscor"),
         ("unknown normalizers plugin 'zscor'", "Did you mean 'zscore'")),
    Case("run-unknown-collector", lambda e: e.run("stats.collectors=[grad_nrm]"),
         ("unknown collectors plugin 'grad_nrm'", "'grad_norm'")),
    Case("run-unknown-data-source", lambda e: e.run("calibration.dataset.name=hff"), ("unknown data plugin 'hff'",)),
    Case("run-data-source-param", lambda e: e.run("calibration.dataset.feild=text"),
         ("calibration.dataset.feild: unknown key",)),
    # -- run: calibration data files --------------------------------------------------------------
    Case("run-corpus-missing", lambda e: e.run(f"calibration.dataset.path={e.tmp / 'nope.txt'}"),
         ("nope.txt", "missing; expected a .txt or .jsonl file")),
    Case("run-corpus-is-dir", lambda e: e.run(f"calibration.dataset.path={e.tmp}"),
         ("is a directory; expected a .txt or .jsonl file",)),
    Case("run-corpus-empty", lambda e: e.run(f"calibration.dataset.path={e.write('empty.txt', '')}"),
         ("empty.txt", "holds no text")),
    Case("run-corpus-bad-jsonl", lambda e: e.run(f"calibration.dataset.path={e.write('c.jsonl', '{nope')}"),
         ("c.jsonl:1", "not valid JSON")),
    Case("run-corpus-relative-missing", _relative_corpus,
         ("'data/nope.txt' is missing", "relative path, read from the working directory")),
    Case("run-corpus-one-line", lambda e: e.run(f"calibration.dataset.path={e.write('one.txt', 'one line only')}"),
         ("one.txt", "holds only 0 window(s)", "calibration.num_samples=16")),
    Case("run-num-samples-beyond-the-text", lambda e: e.run("calibration.num_samples=10000000"),
         ("corpus.txt", "holds only", "calibration.num_samples=10000000")),
    # -- run: the model directory -----------------------------------------------------------------
    Case("run-model-missing", lambda e: e.run(f"model.name_or_path={e.tmp / 'no_model'}"),
         ("no_model", "does not exist")),
    Case("run-model-is-file", lambda e: e.run(f"model.name_or_path={e.write('m.bin', b'x')}"),
         ("m.bin", "is a file; expected a model directory")),
    Case("run-model-no-config", lambda e: e.run(f"model.name_or_path={e.write('m/readme.txt', 'x').parent}"),
         ("has no config.json",)),
    Case("run-model-not-causal-lm", lambda e: e.run(f"model.name_or_path={_vision_model(e)}"),
         ("vit", "is not a causal language model")),
    Case("run-model-corrupt-safetensors", lambda e: e.run(f"model.name_or_path={_corrupt_weights(e)}"),
         ("cannot load the weights of", "SafetensorError", "safetensors")),
    Case("run-model-no-weights", lambda e: e.run(f"model.name_or_path={_no_weights(e)}"),
         ("cannot load safetensors weights from",)),
    Case("run-model-no-tokenizer", lambda e: e.run(f"model.name_or_path={_no_tokenizer(e)}"),
         ("cannot load the tokenizer of", "no_tokenizer")),
    Case("run-model-pruned-checkpoint", lambda e: e.run(f"model.name_or_path={_pruned_copy(e)}"),
         ("is a pruned checkpoint", "load_pruned")),
    # -- run: the output dir ----------------------------------------------------------------------
    Case("run-output-dir-is-file", lambda e: e.run(f"output.dir={e.write('out.txt', 'x')}"),
         ("output.dir", "is a file; expected a directory")),
    Case("run-output-dir-occupied", _occupied_run_dir, ("output.dir", "already holds results", "--overwrite")),
    # -- search -----------------------------------------------------------------------------------
    Case("search-no-base", lambda e: e.search(base=None), ("search.yaml", "needs `base:")),
    Case("search-base-missing", lambda e: e.search(base="nope.yaml"), ("base recipe file", "nope.yaml", "does not exist")),
    Case("search-unknown-key", lambda e: e.search(replicate=2), ("replicate: unknown key", "'replicates'")),
    Case("search-bad-sampler", lambda e: e.search(sampler="bayes"), ("sampler", "'grid', 'random' or 'tpe'")),
    Case("search-replicates-zero", lambda e: e.search(replicates=0), ("replicates", "greater than or equal to 1")),
    Case("search-grid-not-mapping", lambda e: e.search(grid=[1, 2]), ("grid", "valid dictionary")),
    Case("search-grid-bad-value", lambda e: e.search(grid={"calibration.seq_len": ["abc"]}),
         ("grid.calibration.seq_len value 'abc' is not valid",)),
    Case("search-grid-unknown-plugin", lambda e: e.search(grid={"importance.name": ["tylor"]}),
         ("grid.importance.name value 'tylor'", "Did you mean 'taylor'")),
    Case("search-n-trials-zero", lambda e: [*e.search(), "--n_trials", "0"], ("--n_trials", "integer >= 1")),
    Case("search-sampler-needs-n-trials", lambda e: e.search(sampler="random"), ("needs n_trials",)),
    Case("search-grid-one-setting-thrice", lambda e: e.search(grid={"calibration.seq_len": [16, 16.0, "16"]}),
         ("grid.calibration.seq_len", "16, 16.0, '16' are one setting (16)", "list each value once")),
    Case("search-base-is-a-search-recipe", _search_recipe_as_base, ("search.yaml is a search recipe", "base:")),
    Case("search-output-dir-is-file", lambda e: e.search(output_dir=str(e.write("s.txt", "x"))),
         ("s.txt", "is a file; expected a directory")),
    Case("search-other-search-in-dir", _other_search, ("holds a different search", "--overwrite")),
    # -- analyze ----------------------------------------------------------------------------------
    Case("analyze-csv-missing", lambda e: ["analyze", str(e.tmp / "nope.csv")], ("nope.csv", "file not found")),
    Case("analyze-csv-is-dir", lambda e: ["analyze", str(e.tmp)], ("is not a file", "CSV")),
    Case("analyze-csv-empty", lambda e: ["analyze", str(e.csv(""))], ("search_results.csv", "EmptyDataError")),
    Case("analyze-csv-binary", lambda e: ["analyze", str(e.csv(bytes(range(256)) * 4))],
         ("is not a readable CSV table",)),
    Case("analyze-csv-wrong-columns", lambda e: ["analyze", str(e.csv(pd.DataFrame({"a": [1, 2], "b": [3, 4]})))],
         ("no target column 'acc_mean'",)),
    Case("analyze-target-typo", lambda e: ["analyze", str(e.csv(planted_frame())), "--target", "acc_meen"],
         ("no target column 'acc_meen'", "Did you mean 'acc_mean'")),
    Case("analyze-too-few-rows", lambda e: ["analyze", str(e.csv(planted_frame(3)))], ("at least 4",)),
    Case("analyze-decimal-comma", _decimal_comma, ("row 3", "'acc_mean'", "'0,7520'", "decimal comma", "0.7520")),
    Case("analyze-success-not-bool", lambda e: ["analyze", str(e.csv(_flag(planted_frame(), success="maybe")))],
         ("column 'success' should hold True/False",)),
    Case("analyze-output-dir-is-file", lambda e: ["analyze", str(e.csv(planted_frame())), "--output_dir",
                                                  str(e.write("o.txt", "x"))], ("o.txt", "is a file")),
    Case("analyze-output-dir-occupied", _occupied_analysis, ("already holds analysis outputs", "--overwrite")),
    Case("analyze-negative-seed", lambda e: ["analyze", str(e.csv(planted_frame())), "--seed", "-1"],
         ("--seed", "integer >= 0")),
    # -- predict ----------------------------------------------------------------------------------
    Case("predict-model-other-version", lambda e: _predict(e, e.model_json(format_version=99)),
         ("prediction_model.json", "format_version 99", "reads version 1")),
    Case("predict-model-not-json", lambda e: _predict(e, e.write("prediction_model.json", "{not json")),
         ("prediction_model.json", "not JSON")),
    Case("predict-model-wrong-file", lambda e: _predict(e, e.write("run.json", '{"metrics": {}}')),
         ("run.json", "not a gradprune prediction model")),
    Case("predict-model-missing-field", lambda e: _predict(e, e.model_json(features=None)),
         ("invalid prediction model", "features")),
    Case("predict-model-is-dir", lambda e: _predict(e, e.tmp), ("is a directory", "prediction_model.json")),
    Case("predict-model-nan-intercept", lambda e: _predict(e, e.model_json(intercept=float("nan"))),
         ("prediction_model.json", "intercept", "finite number")),
    Case("predict-model-edited-coefficients", lambda e: _predict(e, _edited_model(e, _triple_coefficients)),
         ("prediction_model.json", "coefficients.", "disagrees with standardized_coefficients")),
    Case("predict-model-edited-intercept", lambda e: _predict(e, e.model_json(intercept=99.0)),
         ("intercept: 99 disagrees",)),
    Case("predict-model-unknown-predictor", lambda e: _predict(e, e.model_json(predictor="xgboost", candidates=[])),
         ("predictor 'xgboost' is not a registered predictor", "ols")),
    Case("predict-model-bad-params", lambda e: _predict(e, _edited_model(e, _bad_params)), ("params.alpah",)),
    Case("predict-model-other-predictor", lambda e: _predict(e, _edited_model(e, _other_predictor)),
         ("is not the candidate the analysis exported", "candidates[0]")),
    Case("predict-model-no-training-ranges", lambda e: _predict(e, e.model_json(training_ranges={})),
         ("training_ranges: lacks",)),
    Case("predict-model-zero-scale", lambda e: _predict(e, _edited_model(e, _zero_scale)),
         ("standardisation.scales.", "expected a value > 0")),
    Case("predict-input-missing-column", lambda e: _predict(e, None, e.runs_csv(pd.DataFrame({"x": [1.0]}))),
         ("runs.csv", "missing feature(s)")),
    Case("predict-input-not-numeric", lambda e: _predict(e, None, e.runs_csv(
        planted_frame(2).assign(**{_feature(e): ["high", "low"]}))), ("non-numeric feature value",)),
    Case("predict-run-json-without-metrics", lambda e: _predict(e, None, e.write("run.json", '{"recipe": {}}')),
         ("run.json", "no 'metrics' object")),
    Case("predict-input-is-dir", lambda e: _predict(e, None, e.tmp), ("is a directory", "run.json or a CSV")),
    Case("predict-output-is-an-input", lambda e: _predict(e, None, e.runs_csv(), output=e.tmp / "runs.csv"),
         ("--output", "runs.csv", "is also an input")),
    Case("predict-output-is-dir", lambda e: _predict(e, None, e.runs_csv(), output=e.tmp),
         ("--output", "is a directory")),
    # -- validate ---------------------------------------------------------------------------------
    Case("validate-bad-override", lambda e: ["validate", TINY, "pruning.ratio=2"], ("pruning.ratio", "less than 1")),
    Case("validate-search-bad-grid", lambda e: ["validate", e.search(grid={"pruning.ratio": [2.0]})[1]],
         ("grid.pruning.ratio value 2.0 is not valid",)),
    Case("validate-missing", lambda e: ["validate", str(e.tmp / "nope.yaml")], ("nope.yaml", "does not exist")),
    Case("validate-seed-negative", lambda e: ["validate", TINY, "calibration.seed=-5"], ("calibration.seed", "-5")),
    Case("validate-limit-inf", lambda e: ["validate", TINY, "eval.limit=.inf"], ("eval.limit", "finite number")),
    Case("validate-grid-one-setting", lambda e: ["validate", e.search(grid={"pruning.ratio": [0.2, "0.2"]})[1]],
         ("grid.pruning.ratio", "one setting")),
]


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its size, mtime and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns, digest)
    return out


def _invoke(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse usage errors
        return int(exc.code)


def _log(case_id: str, message: str) -> None:
    path = os.environ.get("GRADPRUNE_BAD_INPUT_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{case_id}\t{message}\n")


@pytest.fixture
def env(tmp_path, recipe_args, model_dir, corpus_file, request, monkeypatch) -> Env:
    monkeypatch.chdir(os.getcwd())  # a case may change the working directory; it is restored after
    # the expensive inputs are built only by the cases that use them
    return Env(tmp_path, recipe_args, model_dir, corpus_file,
               lambda: request.getfixturevalue("pruned_dir"), lambda: request.getfixturevalue("prediction_model"))


def test_the_matrix_is_wide():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)
    assert {c.id.split("-")[0] for c in CASES} == {"run", "search", "analyze", "predict", "validate"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, env: Env, tmp_path, capfd):
    argv = case.build(env)
    capfd.readouterr()  # building inputs may log; only the command's output counts
    before = _snapshot(tmp_path)
    code = _invoke(argv)
    _, err = capfd.readouterr()
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ") or ": error: " in line]
    assert len(errors) == 1, err
    message = errors[0]
    for fragment in case.expect:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert _snapshot(tmp_path) == before, "a refused command wrote or changed files"
    _log(case.id, message)


# --------------------------------------------------------------------------------------------------
# a recipe with several problems: every one is named, one line each (validate and run alike)

THREE_ERRORS = "calibration: {seq_len: 0}\npruning: {ratoi: 0.3}\nstats: {collectors: [grad_norm, grad_nrm]}\n"


@pytest.mark.parametrize("command", ["validate", "run"])
def test_every_recipe_problem_is_one_error_line(command, tmp_path, capfd):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(THREE_ERRORS)
    before = _snapshot(tmp_path)
    assert main([command, str(recipe), f"output.dir={tmp_path / 'out'}"]) == 2
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert "Traceback" not in err and len(lines) == 3, err
    assert all(line.startswith(f"error: {recipe} (with command-line overrides): ") for line in lines), err
    for key in ("calibration.seq_len: Input should be greater than 0", "pruning.ratoi: unknown key. Did you mean",
                "stats.collectors: unknown collectors plugin 'grad_nrm'"):
        assert sum(key in line for line in lines) == 1, (key, err)
    assert _snapshot(tmp_path) == before


def test_a_switch_warning_is_one_line_without_a_source_location(capfd):
    assert main(["validate", TINY, "importance.name=magnitude"]) == 0
    err = capfd.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning: importance.name switched")]
    assert len(warning) == 1 and "importance.params.order" in warning[0], err
    assert "GradpruneWarning" not in err and ".py:" not in err, err


# --------------------------------------------------------------------------------------------------
# a plan that does not match the saved model (the Python API: gradprune.load_pruned)

PLAN_EDITS = [
    ("drop-one-channel", _drop_one_channel, "does not match the saved weights"),
    ("index-out-of-range", _index_out_of_range, "plan.json"),
    ("not-json", None, "not readable JSON"),
]


@pytest.mark.parametrize("edit,fragment", [(e, f) for _, e, f in PLAN_EDITS], ids=[i for i, _, _ in PLAN_EDITS])
def test_load_pruned_with_an_edited_plan(edit, fragment, tmp_path, pruned_dir):
    from gradprune import load_pruned
    from gradprune.errors import GradpruneError

    env = Env(tmp_path, [], Path(), Path(), lambda: pruned_dir, lambda: Path())
    if edit is None:
        d = _pruned_copy(env)
        (d / "plan.json").write_text('{"format_version": 1, "layers": [')
    else:
        d = _edit_plan(env, edit)
    with pytest.raises(GradpruneError) as info:
        load_pruned(d)
    assert fragment in str(info.value) and "plan" in str(info.value)
    _log(f"api-load_pruned-plan-{edit.__name__ if edit else 'not-json'}", str(info.value))


# --------------------------------------------------------------------------------------------------
# NaN/Inf: a model whose weights hold an inf in one layer


@pytest.fixture(scope="module")
def inf_model_dir(tmp_path_factory, model_dir) -> Path:
    """The test model with one inf in layer 2's MLP up-projection."""
    from safetensors.torch import load_file, save_file

    d = tmp_path_factory.mktemp("inf_model")
    shutil.copytree(model_dir, d, dirs_exist_ok=True)
    tensors = load_file(d / "model.safetensors")
    name = "model.layers.2.mlp.up_proj.weight"
    tensors[name] = tensors[name].clone()
    tensors[name][0, 0] = float("inf")
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    return d


def test_overflowing_activations_name_the_first_block(tmp_path, model_dir, recipe_args, capfd):
    """Finite weights whose activations overflow (what fp16 does to large values) in layer 1's MLP."""
    from safetensors.torch import load_file, save_file

    d = tmp_path / "overflow_model"
    shutil.copytree(model_dir, d)
    tensors = load_file(d / "model.safetensors")
    for role in ("gate_proj", "up_proj"):
        name = f"model.layers.1.mlp.{role}.weight"
        tensors[name] = tensors[name] * 1e25  # gate·up ~ 1e50 > float32 max
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    assert main(["run", TINY, *recipe_args, f"model.name_or_path={d}"]) == 2
    message = next(line for line in capfd.readouterr().err.splitlines() if line.startswith("error: "))
    assert "non-finite" in message and "layer 1 (mlp)" in message
    assert not (tmp_path / "out").exists()
    _log("run-overflowing-activations", message)


def test_inf_weights_fail_the_run_naming_the_layer(inf_model_dir, recipe_args, tmp_path, capfd):
    assert main(["run", TINY, *recipe_args, f"model.name_or_path={inf_model_dir}"]) == 2
    err = capfd.readouterr().err
    message = next(line for line in err.splitlines() if line.startswith("error: "))
    assert "non-finite" in message and "layer 2" in message and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    _log("run-inf-weights", message)


def test_inf_weights_are_a_failed_search_row_with_the_reason(inf_model_dir, recipe_args, tmp_path):
    overrides = [a for a in recipe_args if not a.startswith(("model.", "output."))]
    spec = {"base": TINY, "overrides": [*overrides, f"model.name_or_path={inf_model_dir}"],
            "grid": {"pruning.ratio": [0.1, 0.2]}, "output_dir": str(tmp_path / "search")}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert main(["search", str(tmp_path / "s.yaml")]) == 0
    df = pd.read_csv(tmp_path / "search/search_results.csv")
    assert len(df) == 2 and not df.success.any()
    assert df.error.str.contains("layer 2").all() and df.error.str.contains("non-finite").all()
    _log("search-inf-weights (row error)", df.error.iloc[0])


def test_bad_storage_url_writes_nothing(env: Env, tmp_path, capfd):
    argv = [*env.search(), "--storage", "nosuchdb://user@host/db"]
    before = _snapshot(tmp_path)
    assert _invoke(argv) == 2
    assert "cannot open the Optuna storage" in capfd.readouterr().err
    assert _snapshot(tmp_path) == before
