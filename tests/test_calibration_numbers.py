"""Calibration's numbers are pinned: every estimator × granularity × reduction, with and without the
collectors (whose mean-gradient buffer element-level and summed first-order Taylor read), per micro-batch
and per sample, on the embedded model (fp32), a tiny Qwen2 with q/k/v biases (fp32) and a tiny bf16 Mistral,
give the scores and statistics recorded in ``tests/fixtures/calibration_numbers.safetensors``.

The file was written by the straightforward hook arithmetic (fp32 copies of every gradient and weight, one
term tensor per micro-batch); the hooks now read the gradient and the weight once and fold them into fp32
accumulators, and must give the same numbers to a relative 1e-6 (fp32 and bf16 models alike: the model's own
arithmetic is unchanged and the hooks compute in fp32 on exactly converted values). A signed sum that cancels
is compared at the scale where fp32 summation order shows, the sum of its terms' sizes: Σ|w·G| for first-order
vector / joint scores, grad_std for grad_mean, sqrt(Σg²) for Σg (recording the file with one thread and
comparing with two already moves those beyond 1e-6 of their own size).

    PYTHONPATH=$PWD python -m tests.test_calibration_numbers --write   # re-record (after a deliberate change)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).parent / "fixtures" / "calibration_numbers.safetensors"

#: name -> (registry name, params)
ESTIMATORS = {
    "first_vector": ("taylor", {"order": "first", "granularity": "vector"}),
    "first_joint": ("taylor", {"order": "first", "granularity": "joint"}),
    **{f"first_element_{r}": ("taylor", {"order": "first", "granularity": "element", "reduction": r})
       for r in ("sum", "mean", "max")},
    **{f"second_{r}": ("taylor", {"order": "second", "reduction": r}) for r in ("sum", "mean", "max")},
    **{f"mix_{r}": ("taylor_mix", {"reduction": r}) for r in ("sum", "mean", "max")},
    "activation": ("activation", {}),
    "magnitude": ("magnitude", {}),
}
PER_SAMPLE = {
    "first_vector_ps": ("taylor", {"order": "first", "granularity": "vector", "per_sample": True}),
    "second_sum_ps": ("taylor", {"order": "second", "reduction": "sum", "per_sample": True}),
    "mix_max_ps": ("taylor_mix", {"reduction": "max", "per_sample": True}),
}
COLLECTORS = ("grad_norm", "grad_mean", "grad_std", "grad_max", "grad_var", "grad_snr")
#: run -> (estimators, collectors (plus the streaming one below))
RUNS = {"bare": (ESTIMATORS, ()), "stats": (ESTIMATORS, COLLECTORS), "per_sample": (PER_SAMPLE, COLLECTORS)}
MODELS = ("embedded", "qwen2_fp32", "mistral_bf16")
SAMPLES, SEQ_LEN, MICRO = 7, 24, 3  # micro-batches of 3, 3 and 1 samples


def _moments_collector():
    from gradprune.calibration_plugin import grad_norm
    from gradprune.stats.gradient import StatCollector

    class MomentsCollector(StatCollector):
        """Streams per-gradient fp32 sum, sum of squares (the hooks' norm), min, max and count."""

        reads = frozenset({"gradients"})

        def observe_grad(self, layer, role, weight, grad):
            i = layer.index
            self.accumulator("sum")[i] += grad.sum(dtype=torch.float32).double()
            self.accumulator("sumsq")[i] += grad_norm(grad).square().double()
            # a running minimum is the maximum of the negated values (the reductions are sum, max and rows)
            neg_min, mx = self.accumulator("neg_min", op="max"), self.accumulator("max", op="max")
            lo, hi = torch.aminmax(grad)
            neg_min[i] = torch.maximum(neg_min[i], -lo.float().double())
            mx[i] = torch.maximum(mx[i], hi.float().double())
            self.accumulator("count")[i] += grad.numel()

        def per_layer(self):
            kept = {k: t.clone() for k, (t, _) in self.state().items()}  # read by the test after the pass
            kept["min"] = -kept.pop("neg_min")
            self.kept = kept
            return self.accumulator("sumsq").tolist()

    c = MomentsCollector()
    c.name = "moments"
    return c


def _model(name: str):
    from gradprune.recipe import TrainerSection
    from tests.conftest import make_model

    if name == "embedded":
        from transformers import AutoModelForCausalLM

        from gradprune.assets import MODEL_DIR

        model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
        precision = "32-true"
    elif name == "qwen2_fp32":
        model, precision = make_model("qwen2", seed=3), "32-true"
    else:
        model, precision = make_model("mistral", seed=4).to(torch.bfloat16), "bf16-true"
    ids = torch.randint(0, model.config.vocab_size, (SAMPLES, SEQ_LEN), generator=torch.Generator().manual_seed(11))
    return model, ids, TrainerSection(accelerator="cpu", devices=1, precision=precision)


def compute(name: str) -> dict[str, torch.Tensor]:
    """Every run's scores (``<run>|<estimator>|<layer>|<kind>``), statistics and mean loss on one model."""
    from gradprune import plugins
    from gradprune.calibration import calibrate
    from gradprune.models.adapters import get_adapter

    model, ids, trainer = _model(name)
    layers = get_adapter(model).layers(model)
    out: dict[str, torch.Tensor] = {}
    for run, (ests, cols) in RUNS.items():
        estimators = {k: plugins.IMPORTANCE.build(n, p) for k, (n, p) in ests.items()}
        collectors = [plugins.COLLECTORS.build(c) for c in cols] + ([_moments_collector()] if cols else [])
        res = calibrate(model, layers, ids, MICRO, estimators, collectors, trainer)
        for est, scores in res.scores.items():
            for (layer, kind), s in scores.items():
                out[f"{run}|{est}|{layer}|{kind}"] = s.float().contiguous()
        for stat, values in res.layer_stats.items():
            out[f"{run}|stat|{stat}"] = torch.tensor(values, dtype=torch.float64)
        for c in collectors:
            for k, t in (c.kept.items() if c.name == "moments" else ()):
                out[f"{run}|moments|{k}"] = t.double().cpu()
        out[f"{run}|mean_loss"] = torch.tensor([res.mean_loss], dtype=torch.float64)
    return {f"{name}|{k}": v for k, v in out.items()}


@pytest.fixture(scope="module")
def recorded() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(FIXTURE)


def _assert_same(key: str, got: torch.Tensor, ref: torch.Tensor, spread: torch.Tensor | None) -> None:
    assert got.shape == ref.shape, key
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(got)), key
    ref64, got64 = ref.double()[finite], got.double()[finite]
    scale = ref64.abs().max() if ref64.numel() else torch.tensor(0.0, dtype=torch.float64)
    if spread is not None:  # a signed sum (grad_mean, Σg) cancels to a small fraction of the elements' spread
        tol = 1e-6 * torch.maximum(ref64.abs(), spread.double()[finite])
    else:
        tol = 1e-6 * torch.maximum(ref64.abs(), 1e-3 * scale)  # scores near 0 in a tensor: 1e-9 of its scale
    worst = ((got64 - ref64).abs() - tol).max() if ref64.numel() else torch.tensor(-1.0)
    assert worst <= 0, f"{key}: largest excess over rel 1e-6 is {float(worst):.3g} (scale {float(scale):.3g})"


@pytest.mark.parametrize("name", MODELS)
def test_scores_and_statistics_equal_the_recorded_ones(name, recorded):
    got = compute(name)
    want = {k: v for k, v in recorded.items() if k.startswith(f"{name}|")}
    assert set(got) == set(want)
    failures = []
    for key, ref in want.items():
        spread = None
        if key.endswith("|stat|grad_mean"):
            spread = want[key.replace("grad_mean", "grad_std")]
        if key.endswith("|moments|sum"):
            spread = want[key.replace("|sum", "|sumsq")].sqrt()
        est = key.split("|")[2]
        if est.startswith(("first_vector", "first_joint")):  # |Σ w·G| cancels: its scale is Σ |w·G|
            spread = want[key.replace(f"|{est}|", "|first_element_sum|").replace("per_sample|", "bare|")]
        try:
            _assert_same(key, got[key], ref, spread)
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    assert not failures, "\n".join(failures)


def _write() -> None:
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    out: dict[str, torch.Tensor] = {}
    for name in MODELS:
        out.update(compute(name))
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, FIXTURE, metadata={"samples": str(SAMPLES), "seq_len": str(SEQ_LEN), "micro_batch": str(MICRO)})
    print(f"wrote {len(out)} tensors to {FIXTURE}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m tests.test_calibration_numbers --write")
    _write()
