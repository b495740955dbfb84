"""Architecture adapters: module discovery, group views, parameter accounting."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from gradprune.cut.surgery import apply_plan
from gradprune.errors import ModelError
from gradprune.models.adapters import (
    ROLES_ATTN,
    ROLES_MLP,
    UNGROUPED_ROLES,
    get_adapter,
    group_sum,
    group_view,
    group_view3,
)

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("n_kv", [2, 4])
def test_layers_geometry(arch, n_kv, make_model):
    model = make_model(arch, n_kv=n_kv)
    layers = get_adapter(model).layers(model)
    assert [lm.index for lm in layers] == [0, 1, 2, 3]
    lm = layers[0]
    assert (lm.head_dim, lm.n_rep, lm.n_kv, lm.n_channels) == (8, 8 // n_kv, n_kv, 96)
    roles = set(lm.weights())
    assert {"q", "k", "v", "o", "gate", "up", "down"} <= roles
    assert ({"q_bias", "k_bias", "v_bias"} <= roles) == (arch == "qwen2")
    assert roles <= set(ROLES_ATTN + ROLES_MLP)


def _partition_check(t: torch.Tensor, role: str, lm) -> None:
    """Every element of an arange tensor appears in exactly one group, in the group it belongs to."""
    view = group_view(t, role, lm)
    assert view.shape[0] == lm.n_groups(role)
    if role in UNGROUPED_ROLES:
        assert view.numel() == 0
        return
    flat = view.reshape(-1)
    assert torch.equal(flat.sort().values, torch.arange(t.numel()))


def _expected_group(role: str, lm, value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The group of each element of an arange tensor, from first principles.

    HF repeat_kv: query head h reads KV head h // n_rep; o_proj column blocks follow the query heads.
    """
    row, col = (value // shape[1], value % shape[1]) if len(shape) == 2 else (value, None)
    base = role.removesuffix("_bias")
    head = {"q": row, "o": col}.get(base)
    if head is not None:
        return head // lm.head_dim // lm.n_rep
    return {"k": row // lm.head_dim, "v": row // lm.head_dim, "gate": row, "up": row, "down": col}[base]


PARTITION_CASES = [(a, n, False) for a in ARCHS for n in (2, 4)] + [("llama", 2, True), ("llama", 4, True)]


@pytest.mark.parametrize(("arch", "n_kv", "biases"), PARTITION_CASES)
def test_group_view_partitions_exactly(arch, n_kv, biases, make_model):
    # biases: llama's attention_bias / mlp_bias add o_proj and down_proj biases that no group removes
    model = make_model(arch, n_kv=n_kv, **({"attention_bias": True, "mlp_bias": True} if biases else {}))
    lm = get_adapter(model).layers(model)[1]
    for role, p in lm.weights().items():
        t = torch.arange(p.numel()).reshape(p.shape)
        _partition_check(t, role, lm)
        if role in UNGROUPED_ROLES:
            continue
        view = group_view(t, role, lm)
        for g in range(view.shape[0]):
            assert torch.all(_expected_group(role, lm, view[g], p.shape) == g), (role, g)


def test_group_view_is_a_view_except_o(make_model):
    lm = get_adapter(make_model("qwen2")).layers(make_model("qwen2"))[0]
    for role, p in lm.weights().items():
        if role not in UNGROUPED_ROLES:
            assert group_view3(p.data, role, lm).data_ptr() == p.data.data_ptr()
            if role != "o":  # 2-d views too: same storage, nothing copied
                assert group_view(p.data, role, lm).data_ptr() == p.data.data_ptr()
    # writes through the 3-d view reach the weight (what mask_plan relies on)
    w = lm.o.weight.data
    group_view3(w, "o", lm)[1] = 0
    assert torch.count_nonzero(w[:, lm.n_rep * lm.head_dim : 2 * lm.n_rep * lm.head_dim]) == 0


def test_group_sum_matches_view(make_model):
    model = make_model("qwen2", n_kv=4)
    lm = get_adapter(model).layers(model)[2]
    for role, p in lm.weights().items():
        expected = group_view(p.data, role, lm).sum(1)
        assert torch.allclose(group_sum(p.data, role, lm), expected, atol=1e-6), role


def test_group_view_rejects_wrong_shape(make_model):
    model = make_model("llama")
    lm = get_adapter(model).layers(model)[0]
    with pytest.raises(ValueError, match="role 'q'"):
        group_view(torch.zeros(3, 3), "q", lm)
    with pytest.raises(ValueError, match="unknown role"):
        group_view(torch.zeros(3), "nope", lm)
    with pytest.raises(ValueError, match="q_bias"):  # llama has no q bias
        group_view(torch.zeros(64), "q_bias", lm)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tie", [False, True])
def test_group_params_match_actual_reduction(arch, tie, make_model, make_plan):
    from gradprune.pruning.plan import LayerPlan, Plan

    model = make_model(arch, tie=tie)
    adapter = get_adapter(model)
    before = adapter.count_params(model)
    assert before == sum(p.numel() for p in model.parameters())
    lm = adapter.layers(model)[1]
    per_attn, per_mlp = lm.attn_group_params(), lm.mlp_group_params()
    plan = Plan(model.config.model_type, [LayerPlan(1, [1], list(range(90)))], {})
    apply_plan(model, plan)
    assert before - adapter.count_params(model) == 1 * per_attn + 6 * per_mlp
    # after pruning, a group costs the same: the numbers stay right for a second round
    lm = adapter.layers(model)[1]
    assert (lm.attn_group_params(), lm.mlp_group_params()) == (per_attn, per_mlp)


def test_count_params_counts_tied_embeddings_once(make_model):
    tied, untied = make_model("llama", tie=True), make_model("llama", tie=False)
    adapter = get_adapter(tied)
    assert adapter.count_params(untied) - adapter.count_params(tied) == 200 * 64
    clone = copy.deepcopy(tied)
    assert adapter.count_params(clone) == adapter.count_params(tied)


def test_role_kind():
    from gradprune.models.adapters import role_kind

    assert [role_kind(r) for r in ("q", "o_bias", "k_bias")] == ["attn"] * 3
    assert [role_kind(r) for r in ("down", "down_bias", "gate_bias")] == ["mlp"] * 3
    with pytest.raises(ValueError, match="unknown role"):
        role_kind("lm_head")


def test_get_adapter_accepts_model_config_and_dict(make_model):
    model = make_model("mistral")
    assert get_adapter(model) is get_adapter(model.config) is get_adapter({"model_type": "mistral"})


@pytest.mark.parametrize(
    ("model_type", "reason"),
    [("phi3", "fuses q/k/v into one qkv_proj"), ("gemma3", "model_type gemma3_text"),
     ("mixtral", "mixture-of-experts"), ("qwen2_moe", "mixture-of-experts"), ("qwen3_moe", "mixture-of-experts")],
)
def test_refused_model_types_name_their_reason(model_type, reason):
    from transformers import CONFIG_MAPPING

    with pytest.raises(ModelError, match=rf"'{model_type}' is not supported for structured pruning: .*{reason}"):
        get_adapter(CONFIG_MAPPING[model_type]())
    with pytest.raises(ModelError, match="supported: llama, "):
        get_adapter({"model_type": model_type})


def test_phi3_refusal_reason_is_the_transformers_layout():
    # what the refusal says about Phi-3: fused projections, and a qkv split read from the shared config
    import inspect

    from transformers import Phi3Config, Phi3ForCausalLM
    from transformers.models.phi3 import modeling_phi3

    config = Phi3Config(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=2, bos_token_id=1)
    model = Phi3ForCausalLM(config)
    layer = model.model.layers[0]
    assert hasattr(layer.self_attn, "qkv_proj") and not hasattr(layer.self_attn, "q_proj")
    assert hasattr(layer.mlp, "gate_up_proj") and not hasattr(layer.mlp, "gate_proj")
    assert "self.config.num_attention_heads * self.head_dim" in inspect.getsource(modeling_phi3.Phi3Attention.forward)


@pytest.mark.parametrize("model_type", ["mixtral", "qwen3_moe"])
def test_moe_refusal_reason_is_the_transformers_layout(model_type):
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    config = CONFIG_MAPPING[model_type](vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=2,
                                        num_experts=2, moe_intermediate_size=16, pad_token_id=0, bos_token_id=1,
                                        eos_token_id=2)
    mlp = AutoModelForCausalLM.from_config(config).model.layers[0].mlp
    assert mlp.experts.gate_up_proj.dim() == 3 and not hasattr(mlp, "gate_proj")


def test_unsupported_model_type_is_a_model_error():
    from transformers import GPT2Config

    with pytest.raises(ModelError, match=r"'gpt2'.*llama, mistral, qwen2"):
        get_adapter(GPT2Config(n_layer=1, n_embd=32, n_head=2))


def test_import_is_cheap():
    code = "import sys, gradprune.models.adapters; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_supported_model_types_snapshot():
    # every supported architecture has a tiny model in the shared tests (ARCHS), and none is also refused
    from gradprune.models.adapters import REFUSED_MODEL_TYPES, SUPPORTED_MODEL_TYPES

    assert SUPPORTED_MODEL_TYPES == ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")
    assert set(SUPPORTED_MODEL_TYPES) == set(ARCHS)
    assert not set(REFUSED_MODEL_TYPES) & set(SUPPORTED_MODEL_TYPES)
