"""FSDP calibration on 2 CPU processes (gloo) equals a single-process run.

The test runs this file as a script (``popen``: Lightning re-runs it for rank 1, as for ``gradprune
run``). Rank 0 saves its scores, statistics, the plan they give and the gathered model; the test compares
them with ``calibrate`` on one process. 9 samples in micro-batches of 2 over 2 ranks: rank 1 runs padding
passes (its shard is shorter, and per sample its last micro-batch has one sample fewer). In the ``meta``
variant every rank builds the model on the meta device and reads only its shards from a saved checkpoint
(an odd vocabulary: the embedding's rows split 151 / 150; untied embeddings, each its own FSDP unit).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_ddp import _env

ROOT = Path(__file__).resolve().parents[1]
ESTIMATORS = {
    "taylor": ("taylor", {}),
    "joint": ("taylor", {"granularity": "joint"}),
    "fisher": ("fisher", {}),
    "fisher_ps": ("fisher", {"per_sample": True}),
    "activation": ("activation", {}),
    # element level: G and F by rows, each rank its own (FSDP's reduce-scatter), no whole-model buffer
    "element": ("taylor", {"granularity": "element"}),
    "mix": ("taylor_mix", {}),
    "element_max": ("taylor", {"granularity": "element", "reduction": "max"}),
}
COLLECTORS = ("grad_norm", "grad_mean", "grad_std", "grad_max", "grad_var", "grad_snr")
N_SAMPLES, BATCH = 9, 2


# "meta_ref": the meta variant's model, built whole; untied embeddings: FSDP units of their own
MODEL_KW = {"full": {"vocab_size": 300}, "meta": {"vocab_size": 301, "tie_word_embeddings": False}}


def _inputs(arch: str, loading: str = "full"):
    from tests.conftest import make_model

    model = make_model(arch, seed=0, **MODEL_KW[loading.removesuffix("_ref")])
    ids = torch.randint(0, 300, (N_SAMPLES, 12), generator=torch.Generator().manual_seed(7))
    return model, ids


def _empty(checkpoint: Path):
    """The model saved in ``checkpoint``, on the meta device, and the index its shards are read from."""
    from transformers import AutoConfig

    from gradprune.models.shard_loading import empty_model, index_checkpoint, mismatch
    from gradprune.recipe import ModelSection

    model = empty_model(str(checkpoint), AutoConfig.from_pretrained(checkpoint),
                        ModelSection(name_or_path=str(checkpoint)))
    index = index_checkpoint(checkpoint)
    assert mismatch(model, index) is None
    return model, index


def _calibrate(arch: str, strategy: str, devices: int, checkpointing: bool = False, loading: str = "full",
               out_dir: str = ""):
    from gradprune import plugins
    from gradprune.calibration import calibrate
    from gradprune.models.adapters import get_adapter
    from gradprune.recipe import TrainerSection

    model, ids = _inputs(arch, loading)
    shards_from = None
    if loading == "meta":
        model, shards_from = _empty(Path(out_dir) / "checkpoint")
    ests = {k: plugins.IMPORTANCE.build(n, p) for k, (n, p) in ESTIMATORS.items()}
    cols = [plugins.COLLECTORS.build(c) for c in COLLECTORS]
    cfg = TrainerSection(accelerator="cpu", devices=devices, strategy=strategy, precision="32-true")
    res = calibrate(model, get_adapter(model).layers(model), ids, BATCH, ests, cols, cfg,
                    gradient_checkpointing=checkpointing, shards_from=shards_from)
    return res


def _plan(arch: str, scores, loading: str = "full"):
    from gradprune import plugins
    from gradprune.importance.normalizers import normalize_scores
    from gradprune.models.adapters import get_adapter
    from gradprune.pruning.planner import plan_pruning
    from gradprune.recipe import PruningSection

    model, _ = _inputs(arch, loading.removesuffix("_ref"))
    layers = get_adapter(model).layers(model)
    norm = plugins.NORMALIZERS.build("zscore")
    plan = plan_pruning(normalize_scores(scores, norm), layers, get_adapter(model).count_params(model),
                        PruningSection(ratio=0.3, scope="global"), model.config.model_type)
    return {k: v for k, v in plan.to_dict().items() if k != "meta"}


def _worker(arch: str, checkpointing: str, loading: str, out_dir: str) -> None:
    res = _calibrate(arch, "fsdp", 2, checkpointing == "1", loading, out_dir)
    if res.rank != 0:
        assert res.scores == {} and res.model is None
        return
    torch.save({"scores": res.scores, "stats": res.layer_stats, "mean_loss": res.mean_loss, "info": res.record(),
                "state": {k: v.clone() for k, v in res.model.state_dict().items()}, "rank": res.rank},
               Path(out_dir) / "rank0.pt")


def _launch(arch: str, checkpointing: bool, loading: str, out_dir: Path) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), arch, "1" if checkpointing else "0", loading,
           str(out_dir)]
    p = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0, out.decode(errors="replace")[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "checkpointing", "loading"),
                         [("mistral", False, "full"), ("qwen2", True, "meta")])
def test_fsdp_matches_single_process(arch, checkpointing, loading, tmp_path):
    from tests.conftest import make_model

    if loading == "meta":
        make_model(arch, seed=0, **MODEL_KW[loading]).save_pretrained(tmp_path / "checkpoint")
    _launch(arch, checkpointing, loading, tmp_path)
    got = torch.load(tmp_path / "rank0.pt")
    ref = _calibrate(arch, "auto", 1, loading="full" if loading == "full" else "meta_ref")
    assert got["info"]["strategy"] == "fsdp" and got["info"]["world_size"] == 2
    for name in ESTIMATORS:
        assert set(got["scores"][name]) == set(ref.scores[name])
        for key, s in ref.scores[name].items():
            torch.testing.assert_close(got["scores"][name][key], s, rtol=1e-5, atol=1e-9,
                                       msg=lambda m, n=name, k=key: f"{n} {k}: {m}")
        assert _plan(arch, got["scores"][name], loading) == _plan(arch, ref.scores[name], loading), name
    for col in COLLECTORS:
        # grad_mean cancels (|mean| ~ 1e-4 of the elements' std): compared on the scale of grad_std
        abs_tol = [1e-6 * s for s in ref.layer_stats["grad_std"]] if col == "grad_mean" else [1e-12] * 4
        for g, r, a in zip(got["stats"][col], ref.layer_stats[col], abs_tol, strict=True):
            assert g == pytest.approx(r, rel=1e-6, abs=a), col
    assert got["mean_loss"] == pytest.approx(ref.mean_loss, rel=1e-6)
    # the gathered model is the calibrated one, whole
    dense = make_model(arch, seed=0, **MODEL_KW[loading]).state_dict()
    assert set(got["state"]) == set(dense)
    for k, v in dense.items():
        assert torch.equal(got["state"][k], v), k


def test_element_level_importance_is_accepted_under_fsdp():
    from gradprune.recipe import load_recipe

    recipe = load_recipe(str(ROOT / "recipes/tiny.yaml"), ["trainer.strategy=fsdp", "trainer.devices=2",
                                                           "importance.name=taylor_mix", "importance.params={}"])
    assert recipe.importance.name == "taylor_mix"


@pytest.mark.parametrize(("strategy", "devices", "match"), [
    ("fsdp", -1, "give a count"), ("fsdp_cpu_offload", 2, "FSDP1"), ("deepspeed", 2, "DeepSpeed")])
def test_strategies_fsdp_cannot_run_are_refused(strategy, devices, match):
    from gradprune.errors import RecipeError
    from gradprune.recipe import load_recipe

    with pytest.raises(RecipeError, match=match):
        load_recipe(str(ROOT / "recipes/tiny.yaml"), [f"trainer.strategy={strategy}", f"trainer.devices={devices}"])


def test_eval_device_map_needs_fsdp():
    from gradprune.errors import RecipeError
    from gradprune.recipe import load_recipe

    with pytest.raises(RecipeError, match="eval.device_map: auto spreads the model that FSDP calibration gathers"):
        load_recipe(str(ROOT / "recipes/tiny.yaml"), ["eval.device_map=auto"])
    recipe = load_recipe(str(ROOT / "recipes/tiny.yaml"),
                         ["eval.device_map=auto", "trainer.strategy=fsdp", "trainer.devices=2"])
    assert recipe.eval.device_map == "auto"


def test_decoder_layers_are_found_for_sharding():
    from gradprune.models.adapters import get_adapter
    from gradprune.sharding import decoder_layers
    from tests.conftest import make_model

    model = make_model("mistral")
    assert decoder_layers(model, get_adapter(model).layers(model)) == list(model.model.layers)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _worker(*sys.argv[1:5])
