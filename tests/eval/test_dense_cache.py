"""Dense metrics: computed once per identity and settings, cached atomically, compared with pruned."""

from __future__ import annotations

import json

import pytest

from gradprune.eval import add_dense_comparison, dense_metrics
from gradprune.eval import evaluation as evaluate_module
from gradprune.eval.dense_cache import cache_dir
from gradprune.models.loading import model_identity
from gradprune.recipe import ModelSection


@pytest.fixture
def counted(monkeypatch):
    """Counts real evaluations (by part) behind dense_metrics."""
    calls: list[str] = []
    real = evaluate_module.evaluate

    def spy(model, tokenizer, cfg, console=None, title="pruned"):
        calls.append(cfg.run)
        return real(model, tokenizer, cfg, console=console, title=title)

    monkeypatch.setattr(evaluate_module, "evaluate", spy)
    return calls


def test_second_call_reads_the_cache(eval_model, eval_tokenizer, eval_cfg, ppl_file, counted):
    cfg = eval_cfg(ppl_datasets=[str(ppl_file)], ppl_seq_len=32, ppl_max_windows=4, tasks=["piqa"])
    ident = model_identity(ModelSection(name_or_path="tiny-test"), eval_model)
    first = dense_metrics(eval_model, eval_tokenizer, cfg, ident)
    assert counted == ["all"]  # both parts missing: evaluated together (one "dense model evaluation" block)
    assert {"ppl", "ppl_held_out", "acc_piqa", "acc_mean"} <= set(first)
    files = sorted(p.name for p in cache_dir().glob("*.json"))
    assert len(files) == 2 and files[0].startswith("ppl-") and files[1].startswith("zeroshot-")
    ppl_entry, entry = (json.loads((cache_dir() / f).read_text()) for f in files)
    assert entry["key"]["identity"] == ident and entry["info"]["zeroshot"]["lm_eval_version"]
    # cached one file per part, each holding its own metrics only
    assert set(ppl_entry["metrics"]) == {"ppl", "ppl_held_out"} and "zeroshot" not in ppl_entry["info"]
    assert "ppl" not in entry["metrics"] and "acc_piqa" in entry["metrics"] and "ppl" not in entry["info"]

    again = dense_metrics(eval_model, eval_tokenizer, cfg.model_copy(update={"batch_size": 2}), ident)
    assert again == first and counted == ["all"]  # batch size is not part of the key

    more_tasks = cfg.model_copy(update={"tasks": ["piqa", "boolq"]})
    dense_metrics(eval_model, eval_tokenizer, more_tasks, ident)
    assert counted == ["all", "zeroshot"]  # perplexity still cached


def test_unreadable_entry_is_recomputed_and_dense_off_does_nothing(eval_model, eval_tokenizer, eval_cfg,
                                                                   ppl_file, counted):
    cfg = eval_cfg(run="ppl", ppl_datasets=[str(ppl_file)], ppl_seq_len=32, ppl_max_windows=2)
    ident = model_identity(ModelSection(name_or_path="tiny-test"), eval_model)
    dense_metrics(eval_model, eval_tokenizer, cfg, ident)
    (path,) = cache_dir().glob("ppl-*.json")
    path.write_text("{truncated")
    assert "ppl" in dense_metrics(eval_model, eval_tokenizer, cfg, ident)
    assert counted == ["ppl", "ppl"] and json.loads(path.read_text())["metrics"]["ppl"] > 0
    assert dense_metrics(eval_model, eval_tokenizer, cfg.model_copy(update={"dense": False}), ident) == {}
    assert counted == ["ppl", "ppl"]


def test_add_dense_comparison():
    pruned = {"ppl": 20.0, "acc_mean": 0.5, "acc_norm_mean": 0.55, "acc_piqa": 0.6}
    dense = {"ppl": 10.0, "acc_mean": 0.6, "acc_norm_mean": 0.65, "acc_piqa": 0.7, "acc_piqa_stderr": 0.01}
    out = add_dense_comparison(pruned, dense)
    assert out["dense_acc_mean"] == 0.6 and out["dense_ppl"] == 10.0 and out["dense_acc_piqa"] == 0.7
    assert out["acc_drop"] == pytest.approx(0.1) and out["acc_norm_drop"] == pytest.approx(0.1)
    assert out["ppl_ratio"] == 2.0 and out["dense_acc_piqa_stderr"] == 0.01
    assert add_dense_comparison(pruned, {}) == pruned


def test_atomic_json_write_replaces_whole_files(tmp_path):
    from gradprune.files import atomic_write_json

    path = atomic_write_json(tmp_path / "sub" / "entry.json", {"metrics": {"ppl": float("inf")}})
    atomic_write_json(path, {"metrics": {"ppl": 2.5}})
    assert json.loads(path.read_text()) == {"metrics": {"ppl": 2.5}}
    assert [p.name for p in path.parent.iterdir()] == ["entry.json"]  # no temp file left behind


def test_an_unwritable_cache_is_a_warning_and_the_metrics_are_kept(eval_model, eval_tokenizer, eval_cfg, ppl_file,
                                                                    tmp_path, monkeypatch):
    from gradprune.errors import GradpruneWarning
    from gradprune.eval.dense_cache import unwritable_reason

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")  # the cache would have to be created inside a file: it cannot be written
    monkeypatch.setenv("GRADPRUNE_CACHE", str(blocker))
    assert "GRADPRUNE_CACHE" in unwritable_reason()
    cfg = eval_cfg(run="ppl", ppl_datasets=[str(ppl_file)], ppl_seq_len=32, ppl_max_windows=2)
    ident = model_identity(ModelSection(name_or_path="tiny-test"), eval_model)
    with pytest.warns(GradpruneWarning, match="dense-metric cache .* cannot be written"):
        out = dense_metrics(eval_model, eval_tokenizer, cfg, ident)
    assert out["ppl"] > 0 and blocker.read_text() == "x"
