"""Secure by default: no pickle, no unsafe YAML, no remote code unless asked, recipe paths are not shell.

The planted payloads create a marker file when they run; every test checks the marker is absent.
A source scan keeps the package free of the calls that would reopen these doors.
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from gradprune.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes/tiny.yaml")
PACKAGE = ROOT / "gradprune"


class _OpenOnLoad:
    """Unpickling this calls ``open(path, "w")``: a harmless stand-in for arbitrary code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_payload(marker: Path) -> bytes:
    return pickle.dumps({"model.embed_tokens.weight": _OpenOnLoad(marker)}, protocol=2)


def test_the_pickle_payload_is_live(tmp_path):
    # the payload must really run code when unpickled, or the tests below would prove nothing
    probe = tmp_path / "probe"
    pickle.loads(_pickle_payload(probe))  # noqa: S301 - deliberately, on our own bytes
    assert probe.exists()


@pytest.fixture
def pickled_model_dir(tmp_path, model_dir) -> tuple[Path, Path]:
    """A model dir with config, tokenizer and a malicious pytorch_model.bin (no safetensors)."""
    d = tmp_path / "pickled"
    shutil.copytree(model_dir, d)
    (d / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    (d / "pytorch_model.bin").write_bytes(_pickle_payload(marker))
    return d, marker


def test_run_refuses_pickled_weights_without_unpickling(pickled_model_dir, recipe_args, capfd):
    d, marker = pickled_model_dir
    assert main(["run", TINY, *recipe_args, f"model.name_or_path={d}"]) == 2
    err = capfd.readouterr().err
    assert "safetensors" in err and "never pickled" in err and "Traceback" not in err
    assert not marker.exists()


def test_load_pruned_refuses_pickled_weights(pickled_model_dir):
    from gradprune import load_pruned
    from gradprune.errors import GradpruneError

    d, marker = pickled_model_dir
    (d / "gradprune_checkpoint.json").write_text(json.dumps({
        "format_version": 1, "dense_config": json.loads((d / "config.json").read_text())}))
    (d / "plan.json").write_text(json.dumps({"format_version": 1, "model_type": "mistral", "layers": []}))
    with pytest.raises(GradpruneError, match="no model.safetensors"):
        load_pruned(d)
    assert not marker.exists()


YAML_TAG = "!!python/object/apply:os.system"


def _tagged_recipe(tmp_path: Path, marker: Path) -> Path:
    p = tmp_path / "evil.yaml"
    p.write_text(f"model:\n  name_or_path: {YAML_TAG} [\"touch {marker}\"]\n")
    return p


@pytest.mark.parametrize("command", ["run", "validate"])
def test_python_yaml_tags_are_refused(command, tmp_path, capfd):
    marker = tmp_path / "PWNED"
    assert main([command, str(_tagged_recipe(tmp_path, marker))]) == 2
    err = capfd.readouterr().err
    assert "is not valid YAML" in err and "python/object/apply" in err and "Traceback" not in err
    assert not marker.exists()


def test_python_yaml_tag_in_a_search_recipe_and_an_override(tmp_path, capfd):
    marker = tmp_path / "PWNED"
    search = tmp_path / "search.yaml"
    search.write_text(f"base: {TINY}\ngrid: {{pruning.ratio: [{YAML_TAG} ['touch {marker}']]}}\n")
    assert main(["search", str(search)]) == 2
    assert "is not valid YAML" in capfd.readouterr().err
    # an override value is YAML too: a tag there stays a plain string (here: a recipe value that fails)
    assert main(["validate", TINY, f"pruning.ratio={YAML_TAG} ['touch {marker}']"]) == 2
    assert "pruning.ratio" in capfd.readouterr().err
    assert not marker.exists() and not (tmp_path / "search_out").exists()


def test_python_yaml_tag_in_a_task_folder_is_refused(tmp_path):
    from gradprune.errors import EvalError
    from gradprune.eval.tasks import render_task_dir

    marker = tmp_path / "PWNED"
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks/evil.yaml").write_text(f"task: evil\ndataset_path: {YAML_TAG} ['touch {marker}']\n")
    with pytest.raises(EvalError, match="cannot be read"):
        render_task_dir(tmp_path / "tasks")
    assert not marker.exists()


def test_remote_code_runs_only_when_the_recipe_asks(tmp_path, recipe_args, capfd):
    marker = tmp_path / "PWNED"
    d = tmp_path / "remote"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "evil_lm", "auto_map": {"AutoConfig": "evil.EvilConfig",
                                              "AutoModelForCausalLM": "evil.EvilModel"}}))
    (d / "evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    assert main(["run", TINY, *recipe_args, f"model.name_or_path={d}"]) == 2
    err = " ".join(capfd.readouterr().err.split())
    assert "trust_remote_code" in err and str(d) in err
    assert not marker.exists()


def test_the_run_record_says_whether_remote_code_was_trusted(recipe_args, tmp_path):
    assert main(["run", TINY, *recipe_args]) == 0
    record = json.loads((tmp_path / "out/run.json").read_text())
    assert record["model"]["trust_remote_code"] is False
    assert record["recipe"]["model"]["trust_remote_code"] is False


SHELLISH = ["$(touch {m})", "`touch {m}`", "x; touch {m}", "x && touch {m} | cat"]


@pytest.mark.parametrize("template", SHELLISH)
def test_recipe_paths_are_not_shell(template, tmp_path, recipe_args, capfd):
    marker = tmp_path / "PWNED"
    value = template.format(m=marker)
    assert main(["run", TINY, *recipe_args, f"calibration.dataset.path={value}"]) == 2
    assert value in capfd.readouterr().err  # the literal text was used as a (missing) path
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# source scan: the calls that would load pickles, unsafe YAML, or run strings as code


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(str(n).split(".")[0] in {"pickle", "cPickle", "dill", "shelve", "marshal", "joblib"} for n in names):
                out.append(f"{where}: imports a pickle-family module")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        kwargs = {k.arg: k.value for k in node.keywords}
        if name in {"eval", "exec", "compile", "os.system", "os.popen", "yaml.unsafe_load", "yaml.full_load"}:
            out.append(f"{where}: {name}()")
        if name == "torch.load" and not (isinstance(kwargs.get("weights_only"), ast.Constant)
                                         and kwargs["weights_only"].value is True):
            out.append(f"{where}: torch.load without weights_only=True")
        if name == "yaml.load" and _dotted(kwargs.get("Loader", ast.Name("?"))) not in {"yaml.SafeLoader", "_Loader", "RecipeLoader"}:
            out.append(f"{where}: yaml.load with a Loader that may not be safe")
        if "shell" in kwargs and not (isinstance(kwargs["shell"], ast.Constant) and kwargs["shell"].value is False):
            out.append(f"{where}: shell=True")
        loads_weights = name.endswith(".from_pretrained") and ("ForCausalLM" in name or "AutoModel" in name)
        safe = kwargs.get("use_safetensors")
        if loads_weights and not (isinstance(safe, ast.Constant) and safe.value is True):
            out.append(f"{where}: {name} without use_safetensors=True")
    return out


def test_package_has_no_unsafe_loads_or_code_execution():
    from gradprune.eval.tasks import _Loader
    from gradprune.recipe import RecipeLoader

    # the two yaml.load calls in the package use SafeLoader subclasses
    assert issubclass(_Loader, yaml.SafeLoader) and issubclass(RecipeLoader, yaml.SafeLoader)
    findings = [f for p in sorted(PACKAGE.rglob("*.py")) for f in _findings(p)]
    assert [f for f in findings if f.split(":")[0] not in KNOWN] == []


# a maintainer script that loads the package's own freshly trained model (transformers reads a *.bin
# there with torch.load(weights_only=True)); it should still say use_safetensors=True
KNOWN = {"gradprune/assets/pruning_check.py"}


def test_the_scan_catches_what_it_looks_for(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("import pickle\nimport torch, yaml, subprocess\ntorch.load('x')\nyaml.load(s, Loader=yaml.Loader)\n"
                   "eval('1')\nsubprocess.run('ls', shell=True)\nAutoModelForCausalLM.from_pretrained(p)\n")
    assert len(_findings(bad)) == 6
