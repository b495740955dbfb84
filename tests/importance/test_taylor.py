"""Taylor estimators against an independent reference built from stored per-batch gradients."""

from __future__ import annotations

import pytest
import torch

from gradprune import plugins
from gradprune.calibration import calibrate
from gradprune.models.adapters import get_adapter
from gradprune.recipe import TrainerSection
from tests.conftest import make_model

CPU = TrainerSection(accelerator="cpu", devices=1, precision="32-true")


def _ids(n=6, length=12, vocab=300, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, length), generator=g)


def _reference_grads(model, ids, micro):
    """Per-micro-batch gradients of every prunable weight, by a plain loop."""
    layers = get_adapter(model).layers(model)
    out = []
    for chunk in ids.split(micro):
        model.zero_grad(set_to_none=True)
        model(input_ids=chunk, labels=chunk).loss.backward()
        out.append({(lm.index, r): p.grad.detach().clone() for lm in layers for r, p in lm.weights().items()})
    model.zero_grad(set_to_none=True)
    return layers, out


def _group_index(lm, role):
    """Explicit element → group map (independent of group_view): group id per element of the weight."""
    w = lm.weights()[role]
    hd, rep = lm.head_dim, lm.n_rep
    if role in ("q",):
        return (torch.arange(w.shape[0]) // (rep * hd))[:, None].expand_as(w)
    if role in ("k", "v"):
        return (torch.arange(w.shape[0]) // hd)[:, None].expand_as(w)
    if role == "o":
        return (torch.arange(w.shape[1]) // (rep * hd))[None, :].expand_as(w)
    if role in ("gate", "up"):
        return torch.arange(w.shape[0])[:, None].expand_as(w)
    return torch.arange(w.shape[1])[None, :].expand_as(w)  # down


def _reduce(lm, values_by_role, kind, how):
    roles = ("q", "k", "v", "o") if kind == "attn" else ("gate", "up", "down")
    n = lm.n_kv if kind == "attn" else lm.n_channels
    out = torch.zeros(n) if how != "max" else torch.full((n,), -float("inf"))
    cnt = torch.zeros(n)
    for r in roles:
        idx = _group_index(lm, r).reshape(-1)
        v = values_by_role[r].reshape(-1).float()
        if how == "max":
            out = out.scatter_reduce(0, idx, v, reduce="amax")
        else:
            out = out.index_add(0, idx, v)
            cnt = cnt.index_add(0, idx, torch.ones_like(v))
    return out / cnt if how == "mean" else out


def _run(model, ids, name, params, micro):
    est = plugins.IMPORTANCE.build(name, params)
    layers = get_adapter(model).layers(model)
    res = calibrate(model, layers, ids, micro, {"e": est}, [], CPU)
    return res.scores["e"]


def _llm_pruner_vector(lm, w, G, kind):
    """LLM-Pruner's ``vectorize`` (hf_llama_pruner.TaylorImportance): per module, ``salience = w * grad``,
    ``salience.sum(1).abs()`` per output row (``.sum(0)`` per input column), summed over the group's modules
    and, for a head, over its rows."""
    if kind == "mlp":
        return ((w["gate"] * G["gate"]).sum(1).abs() + (w["up"] * G["up"]).sum(1).abs()
                + (w["down"] * G["down"]).sum(0).abs())
    per_kv = lambda t: t.view(lm.n_kv, -1).sum(1)  # noqa: E731 - the rows of one KV group
    return (per_kv((w["q"] * G["q"]).sum(1).abs()) + per_kv((w["k"] * G["k"]).sum(1).abs())
            + per_kv((w["v"] * G["v"]).sum(1).abs()) + per_kv((w["o"] * G["o"]).sum(0).abs()))


def _torch_pruning_first(lm, w, G, kind):
    """Torch-Pruning's TaylorImportance: ``(w * grad).abs().sum(1)`` per output channel (``.sum(0)`` per input
    channel), group reduction sum — i.e. first-order element importance with sum."""
    if kind == "mlp":
        return ((w["gate"] * G["gate"]).abs().sum(1) + (w["up"] * G["up"]).abs().sum(1)
                + (w["down"] * G["down"]).abs().sum(0))
    per_kv = lambda t: t.view(lm.n_kv, -1).sum(1)  # noqa: E731
    return (per_kv((w["q"] * G["q"]).abs().sum(1)) + per_kv((w["k"] * G["k"]).abs().sum(1))
            + per_kv((w["v"] * G["v"]).abs().sum(1)) + per_kv((w["o"] * G["o"]).abs().sum(0)))


CASES = [
    ("taylor", {"order": "first", "granularity": "vector"}),
    ("taylor", {"order": "first", "granularity": "joint"}),
    ("taylor", {"order": "first", "granularity": "element", "reduction": "sum"}),
    ("taylor", {"order": "first", "granularity": "element", "reduction": "max"}),
    ("taylor", {"order": "second", "reduction": "sum"}),
    ("taylor", {"order": "second", "reduction": "mean"}),
    ("taylor", {"order": "second", "reduction": "max"}),
    ("taylor_mix", {"reduction": "sum"}),
]


@pytest.mark.parametrize("name,params", CASES, ids=[str(c[1]) for c in CASES])
def test_taylor_matches_reference(name, params):
    model = make_model("mistral")
    ids = _ids()
    layers, grads = _reference_grads(model, ids, micro=2)
    scores = _run(model, ids, name, params, micro=2)
    p = plugins.IMPORTANCE.validate_params(name, params, "p")
    gran = p.granularity or ("vector" if p.order == "first" else "element")
    n = len(grads)
    for lm in layers:
        for kind in ("attn", "mlp"):
            roles = ("q", "k", "v", "o") if kind == "attn" else ("gate", "up", "down")
            w = {r: lm.weights()[r].detach() for r in roles}
            G = {r: sum(g[(lm.index, r)] for g in grads) / n for r in roles}
            F = {r: sum(g[(lm.index, r)] ** 2 for g in grads) / n for r in roles}
            if p.order == "first" and gran == "vector":
                ref = _llm_pruner_vector(lm, w, G, kind)
            elif p.order == "first" and gran == "joint":
                ref = _reduce(lm, {r: w[r] * G[r] for r in roles}, kind, "sum").abs()
            elif p.order == "first":
                ref = _reduce(lm, {r: (w[r] * G[r]).abs() for r in roles}, kind, p.reduction)
                if p.reduction == "sum":
                    torch.testing.assert_close(ref, _torch_pruning_first(lm, w, G, kind), rtol=1e-5, atol=1e-10)
            elif p.order == "second":
                ref = _reduce(lm, {r: 0.5 * w[r] ** 2 * F[r] for r in roles}, kind, p.reduction)
            else:
                ref = _reduce(lm, {r: (w[r] * G[r] - 0.5 * w[r] ** 2 * F[r]).abs() for r in roles}, kind, p.reduction)
            got = scores[(lm.index, kind)]
            assert got.shape == ref.shape
            torch.testing.assert_close(got, ref.float(), rtol=2e-4, atol=1e-9)


def test_vector_and_joint_are_different_quantities():
    """|Σ_group w·G| and Σ_rows |Σ_row w·G| are related by no constant (the point of naming both)."""
    model = make_model("mistral")
    ids = _ids()
    v = _run(model, ids, "taylor", {"granularity": "vector"}, micro=3)
    j = _run(model, ids, "taylor", {"granularity": "joint"}, micro=3)
    ratio = torch.cat([j[k] / v[k] for k in v])
    assert bool((j[(1, "attn")] <= v[(1, "attn")] * (1 + 1e-5)).all())  # triangle inequality
    assert float(ratio.max() / ratio.min()) > 1.5


@pytest.mark.parametrize("params", [{"granularity": "vector"}, {"granularity": "joint"},
                                    {"granularity": "element"}, {"granularity": "element", "reduction": "max"},
                                    {"order": "second", "per_sample": True}, {"order": "mix", "per_sample": True}])
def test_scores_do_not_depend_on_the_micro_batch_split(params):
    """4 samples in micro-batches of 1, 2, 3 (3 + 1) and 4: means over samples, the same scores."""
    model = make_model("qwen2")  # with q/k/v biases
    ids = _ids(n=4)
    runs = [_run(model, ids, "taylor", params, micro=b) for b in (1, 2, 3, 4)]
    for other in runs[1:]:
        for key, s in runs[0].items():
            # fp32 sums in another order: |Σ w·G| near 0 (joint) cancels, so atol scales with the layer's scores
            atol = 1e-5 * float(s.abs().max())
            torch.testing.assert_close(other[key], s, rtol=1e-4, atol=atol, msg=lambda m, k=key: f"{k}: {m}")


def test_micro_batch_fisher_depends_on_the_micro_batch_by_definition():
    model = make_model("mistral")
    ids = _ids(n=4)
    one, four = _run(model, ids, "fisher", {}, micro=1), _run(model, ids, "fisher", {}, micro=4)
    assert float(four[(1, "mlp")].sum()) < float(one[(1, "mlp")].sum())


@pytest.mark.parametrize("params", [{"order": "second", "granularity": "vector"},
                                    {"order": "mix", "granularity": "joint"},
                                    {"order": "first", "granularity": "joint", "reduction": "max"}])
def test_granularities_an_order_does_not_have_are_refused(params):
    from gradprune.errors import GradpruneError

    with pytest.raises(GradpruneError, match="granularity"):
        plugins.IMPORTANCE.validate_params("taylor", params, "importance.params")


def test_per_sample_fisher_is_exact_per_sample():
    """``per_sample`` gives E[g²] over single samples even when batch_size > 1."""
    model = make_model("llama")
    ids = _ids(n=4)
    layers, grads = _reference_grads(model, ids, micro=1)
    got = _run(model, ids, "fisher", {"per_sample": True}, micro=4)
    _, batch_grads = _reference_grads(model, ids, micro=4)
    approx = _run(model, ids, "fisher", {}, micro=4)
    lm = layers[1]
    roles = ("gate", "up", "down")
    w = {r: lm.weights()[r].detach() for r in roles}
    exact = _reduce(lm, {r: 0.5 * w[r] ** 2 * sum(g[(1, r)] ** 2 for g in grads) / 4 for r in roles}, "mlp", "sum")
    torch.testing.assert_close(got[(1, "mlp")], exact.float(), rtol=2e-4, atol=1e-12)
    # the micro-batch approximation is smaller (E[g]² <= E[g²]) and differs
    assert float(approx[(1, "mlp")].sum()) < float(got[(1, "mlp")].sum())


def test_grads_are_freed_and_flags_restored():
    model = make_model("qwen2")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    _run(model, _ids(), "taylor", {}, micro=3)
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_embeddings_get_no_gradient():
    model = make_model("mistral")
    seen = []
    emb = model.get_input_embeddings().weight
    emb.register_hook(lambda g: seen.append(g))
    _run(model, _ids(), "taylor", {}, micro=3)
    assert seen == []


@pytest.mark.parametrize("params", [{"granularity": "element"}, {"order": "mix"}])
def test_element_taylor_shares_the_collectors_mean_gradient_buffer(params):
    """With the stat collectors present, element-level Taylor reads their Σ n_b·g_b instead of its own copy."""
    model = make_model("mistral")
    ids, layers = _ids(n=5), get_adapter(model).layers(model)
    alone = _run(model, ids, "taylor", params, micro=2)
    est = plugins.IMPORTANCE.build("taylor", params)
    res = calibrate(model, layers, ids, 2, {"e": est}, [plugins.COLLECTORS.build("grad_norm")], CPU)
    assert "mean_gradient" in est.reads  # G, kept once by calibration for it and the collector
    for key, s in alone.items():
        torch.testing.assert_close(res.scores["e"][key], s, rtol=1e-6, atol=1e-12)


def test_element_max_skips_the_biases_no_group_removes():
    """o_proj / down_proj biases belong to no group: max is taken over the grouped elements only (their
    empty groups used to make ``amax`` fail)."""
    model = make_model("llama", attention_bias=True, mlp_bias=True)
    ids = _ids(n=4)
    layers, grads = _reference_grads(model, ids, micro=2)
    scores = _run(model, ids, "taylor", {"granularity": "element", "reduction": "max"}, micro=2)
    lm = layers[1]
    per_group = {"q": lm.n_rep * lm.head_dim, "k": lm.head_dim, "v": lm.head_dim, "gate": 1, "up": 1}
    for kind, roles in (("attn", ("q", "k", "v")), ("mlp", ("gate", "up"))):
        ref = _reduce(lm, {r: (lm.weights()[r].detach() * sum(g[(1, r)] for g in grads) / 2).abs()
                           for r in ("q", "k", "v", "o", "gate", "up", "down")}, kind, "max")
        for r in roles:  # the grouped biases: element i belongs to group i // per_group
            b = (lm.weights()[f"{r}_bias"].detach() * sum(g[(1, f"{r}_bias")] for g in grads) / 2).abs()
            ref = torch.maximum(ref, b.view(-1, per_group[r]).amax(1))
        torch.testing.assert_close(scores[(1, kind)], ref.float(), rtol=2e-4, atol=1e-9)


@pytest.mark.parametrize("order", ["first", "second", "mix"])
def test_a_formula_term_is_linear_in_the_moments(order):
    """What lets the accumulator sum per-micro-batch terms: term(w, Σ n·g, Σ n·g²) = Σ n·term(w, g, g²)."""
    from gradprune.importance.taylor import FORMULAS

    f = FORMULAS[order]()
    gen = torch.Generator().manual_seed(0)
    w, grads, n = torch.randn(5, 7, generator=gen), torch.randn(3, 5, 7, generator=gen), (1.0, 2.0, 3.0)
    streamed = sum(k * f.term(w, g, g * g) for k, g in zip(n, grads, strict=True))
    moments = (sum(k * g for k, g in zip(n, grads, strict=True)), sum(k * g * g for k, g in zip(n, grads, strict=True)))
    torch.testing.assert_close(f.term(w, *moments), streamed, rtol=1e-5, atol=1e-6)
