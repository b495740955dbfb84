"""Surgery: the cut model computes what the dense model with the removed groups zeroed computes."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from gradprune.cut.surgery import apply_plan, mask_plan
from gradprune.errors import PlanError
from gradprune.models.adapters import get_adapter
from gradprune.pruning.plan import LayerPlan, Plan

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")


def _pair(make_model, make_plan, arch, seed, **kw):
    model = make_model(arch, seed=seed, **kw)
    plan = make_plan(model.config, seed)
    reference = copy.deepcopy(model)
    mask_plan(reference, plan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zero-size Linear (or other) warning from the cut
        apply_plan(model, plan)
    return model, reference, plan


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_kv", [2, 4])
def test_cut_matches_masked_forward_and_backward(arch, seed, n_kv, make_model, make_plan, tokens):
    model, reference, plan = _pair(make_model, make_plan, arch, seed, n_kv=n_kv)
    out, ref = model(tokens, labels=tokens), reference(tokens, labels=tokens)
    # fp32 on CPU: at most 6.4e-7 apart over these archs, seeds and plans (gemma3_text the largest)
    assert (out.logits - ref.logits).abs().max() <= 2e-6
    out.loss.backward()
    ref.loss.backward()
    # gradients of the kept weights equal the reference's gradients at the kept positions
    layers, ref_layers = get_adapter(model).layers(model), get_adapter(reference).layers(reference)
    for lp in plan.layers:
        lm, rm = layers[lp.layer], ref_layers[lp.layer]
        if lp.mlp_kept is not None:
            assert torch.allclose(lm.up.weight.grad, rm.up.weight.grad[lp.mlp_kept], atol=1e-5)
            assert torch.allclose(lm.down.weight.grad, rm.down.weight.grad[:, lp.mlp_kept], atol=1e-5)
        if lp.attn_kept is not None:
            kv_rows = [g * lm.head_dim + i for g in lp.attn_kept for i in range(lm.head_dim)]
            assert torch.allclose(lm.k.weight.grad, rm.k.weight.grad[kv_rows], atol=1e-5)
    assert torch.allclose(
        model.model.embed_tokens.weight.grad, reference.model.embed_tokens.weight.grad, atol=1e-5
    )


def test_empty_blocks_and_shapes(make_model, make_plan):
    model, _, plan = _pair(make_model, make_plan, "qwen2", 0)
    layers = get_adapter(model).layers(model)
    for lp in plan.layers:
        lm = layers[lp.layer]
        if lp.attn_kept is not None:
            assert lm.n_kv == len(lp.attn_kept)
            assert lm.q.out_features == lm.q.weight.shape[0] == len(lp.attn_kept) * lm.n_rep * lm.head_dim
            assert lm.q.bias.shape[0] == lm.q.out_features
            assert lm.o.in_features == lm.o.weight.shape[1] == lm.q.out_features
        if lp.mlp_kept is not None:
            assert lm.n_channels == len(lp.mlp_kept) == lm.down.in_features
            assert lm.mlp.intermediate_size == len(lp.mlp_kept)
    assert layers[1].n_channels == 0 and layers[2].n_kv == 0
    # geometry the attention code reads is unchanged
    assert all((lm.head_dim, lm.attn.num_key_value_groups) == (8, 4) for lm in layers)


def test_dtype_device_requires_grad_and_identity_kept(make_model):
    model = make_model("llama").to(torch.bfloat16)
    lm = get_adapter(model).layers(model)[0]
    q_weight = lm.q.weight
    lm.down.weight.requires_grad_(False)
    apply_plan(model, Plan("llama", [LayerPlan(0, [1], [0, 5, 7])], {}))
    assert lm.q.weight is q_weight  # same Parameter object: optimizers and hooks keep working
    assert q_weight.dtype == torch.bfloat16 and q_weight.requires_grad
    assert q_weight.is_contiguous() and lm.down.weight.is_contiguous()
    assert not lm.down.weight.requires_grad


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cache", ["dynamic", "static", "none"])
def test_generate_matches_masked(arch, cache, make_model, make_plan, tokens):
    model, reference, _ = _pair(make_model, make_plan, arch, 3)
    mask = torch.ones_like(tokens)
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False)
    if cache == "none":
        kwargs["use_cache"] = False
    else:
        kwargs["cache_implementation"] = cache
    out = model.generate(tokens, **kwargs)
    assert out.shape == (2, 18)
    assert torch.equal(out, reference.generate(tokens, **kwargs))


def test_eager_attention_matches_masked(make_model, make_plan, tokens):
    model, reference, _ = _pair(make_model, make_plan, "mistral", 4, attn_implementation="eager")
    assert torch.allclose(model(tokens).logits, reference(tokens).logits, atol=1e-5)


def test_plans_compose_with_untouched_layers(make_model, tokens):
    model = make_model("llama", n_kv=4)
    before = model(tokens).logits
    apply_plan(
        model, Plan("llama", [LayerPlan(0, None, None), LayerPlan(1, [0, 1, 2, 3], list(range(96)))], {})
    )
    assert torch.equal(model(tokens).logits, before)


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ([LayerPlan(4, [0], None)], "layer 4 out of range: the model has 4 layers"),
        (
            [LayerPlan(0, [0, 2], None)],
            r"layer 0 attn_kept: index 2 out of range \(the layer has 2 KV groups\)",
        ),
        ([LayerPlan(1, None, [3, 96])], "layer 1 mlp_kept: index 96 out of range"),
        ([LayerPlan(2, [1, 0], None)], "layer 2 attn_kept: indices must be sorted and unique"),
        ([LayerPlan(2, None, [4, 4])], "layer 2 mlp_kept: indices must be sorted and unique"),
        ([LayerPlan(1, None, [-1, 2])], "layer 1 mlp_kept: negative index"),
        ([LayerPlan(0, None, None), LayerPlan(0, [0], None)], "layer 0 appears more than once"),
        ([LayerPlan(0, "01", None)], "expected a list of ints"),
    ],
)
def test_invalid_plans_are_rejected_before_any_change(layers, match, make_model):
    model = make_model("llama")
    shapes = {n: p.shape for n, p in model.named_parameters()}
    # the bad entries come after a valid one, which must not have been applied either
    plan = Plan("llama", [LayerPlan(3, [1], [0, 1]), *layers], {})
    with pytest.raises(PlanError, match=match):
        apply_plan(model, plan)
    assert {n: p.shape for n, p in model.named_parameters()} == shapes


def test_plan_for_another_model_type_is_rejected(make_model):
    with pytest.raises(PlanError, match="plan is for model_type 'qwen2', the model is 'llama'"):
        apply_plan(make_model("llama"), Plan("qwen2", [], {}))


def test_a_second_plan_indexes_the_cut_model(make_model, tokens):
    model = make_model("mistral", n_kv=4)
    apply_plan(model, Plan("mistral", [LayerPlan(0, [0, 2, 3], None)], {}))
    with pytest.raises(PlanError, match="index 3 out of range"):
        apply_plan(model, Plan("mistral", [LayerPlan(0, [3], None)], {}))
    apply_plan(model, Plan("mistral", [LayerPlan(0, [2], None)], {}))
    assert get_adapter(model).layers(model)[0].n_kv == 1
    model(tokens)


def test_llama_with_all_biases(make_model, make_plan, tokens):
    # attention_bias adds an o_proj bias and mlp_bias a down_proj bias: no group removes them
    model = make_model("llama", attention_bias=True, mlp_bias=True)
    with torch.no_grad():  # the default init zeroes biases, which would hide a wrong cut
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.1, 0.1)
    lm = get_adapter(model).layers(model)[0]
    assert {"o_bias", "down_bias", "gate_bias", "up_bias", "q_bias"} <= set(lm.weights())
    before = get_adapter(model).count_params(model)
    per_attn, per_mlp = lm.attn_group_params(), lm.mlp_group_params()
    plan = make_plan(model.config, 5)
    reference = copy.deepcopy(model)
    mask_plan(reference, plan)
    apply_plan(model, plan)
    assert torch.allclose(model(tokens).logits, reference(tokens).logits, atol=1e-5)
    removed_kv = sum(2 - len(lp.attn_kept) for lp in plan.layers if lp.attn_kept is not None)
    removed_ch = sum(96 - len(lp.mlp_kept) for lp in plan.layers if lp.mlp_kept is not None)
    assert before - get_adapter(model).count_params(model) == removed_kv * per_attn + removed_ch * per_mlp


@pytest.mark.parametrize("arch", ["qwen3", "gemma3_text"])
def test_per_head_norms_are_shared_and_untouched(arch, make_model, make_plan):
    # q_norm / k_norm normalise each head over head_dim with one weight for all heads: a cut keeps them
    model = make_model(arch)
    attns = [layer.self_attn for layer in model.model.layers]
    before = [(a.q_norm.weight.clone(), a.k_norm.weight.clone()) for a in attns]
    apply_plan(model, make_plan(model.config, 0))
    for a, (q, k) in zip(attns, before, strict=True):
        assert a.q_norm.weight.shape == (8,) and torch.equal(a.q_norm.weight, q) and torch.equal(a.k_norm.weight, k)


@pytest.mark.parametrize("arch", ["gemma2", "gemma3_text"])
def test_sliding_window_and_softcap_are_exercised(arch, make_model, tokens):
    # the tiny configs' windows (6) are shorter than the test sequences, so the sliding layers matter
    assert tokens.shape[1] > 6
    narrow, wide = make_model(arch), make_model(arch, sliding_window=64)
    assert {lt for lt in narrow.config.layer_types} == {"sliding_attention", "full_attention"}
    assert not torch.allclose(narrow(tokens).logits, wide(tokens).logits, atol=1e-3)
    if arch == "gemma2":
        assert narrow.config.attn_logit_softcapping and narrow.config.final_logit_softcapping
