"""LoRA recovery on pruned layers of different widths; the adapter saved, reloaded and merged."""

from __future__ import annotations

import pytest
import torch

from gradprune import plugins
from gradprune.cut.checkpoint import MANIFEST, load_pruned, save_pruned
from gradprune.cut.surgery import apply_plan
from gradprune.errors import PluginError, RecoveryError
from gradprune.recovery.lora import PROJECTIONS, LoRARecovery, lora_targets
from gradprune.recovery.stage import RecoveryResult


def _pruned(make_model, make_plan, arch="mistral", seed=0):
    model = make_model(arch, seed=seed)
    plan = make_plan(model.config, seed)
    apply_plan(model, plan)
    return model, plan


def _train(method, model, tokens, steps=3):
    torch.manual_seed(0)
    trainable = method.attach(model)
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    for _ in range(steps):
        model(tokens, labels=tokens).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return trainable


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_lora_adapts_every_pruned_linear_whatever_its_width(arch, make_model, make_plan, tokens):
    model, _ = _pruned(make_model, make_plan, arch)
    widths = {n: (m.in_features, m.out_features) for n, m in model.named_modules()
              if n.rsplit(".", 1)[-1] in PROJECTIONS}
    assert len({w for w in widths.values()}) > 3  # the random plan leaves layers of different widths
    untuned = model(tokens).logits.detach()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = plugins.RECOVERY.build("lora", {"r": 4}, "recovery.params")
    trainable = _train(method, model, tokens)
    adapted = lora_targets(model, None)
    # a Linear pruned to nothing (layer 1's MLP, layer 2's attention) has no weight to adapt
    assert sorted(adapted) == sorted(n for n, (i, o) in widths.items() if i * o > 0)
    assert len(adapted) < len(widths)
    for name in adapted:
        layer = model.get_submodule(name)
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        assert (a.shape, b.shape) == ((4, widths[name][0]), (widths[name][1], 4))
    assert sum(t.numel() for t in trainable) == sum(4 * (i + o) for i, o in (widths[n] for n in adapted))
    recovered = model(tokens).logits.detach()
    assert not torch.allclose(recovered, untuned)
    method.release(model)
    assert all(type(model.get_submodule(n)) is torch.nn.Linear for n in adapted)
    assert torch.equal(model(tokens).logits, untuned)  # the base weights were never touched
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n]), n
    assert method.summary()["adapted_modules"] == len(adapted)


def test_target_modules_picks_projections_by_name(make_model, make_plan):
    model, _ = _pruned(make_model, make_plan)
    names = lora_targets(model, ["q_proj", "down_proj"])
    assert names and {n.rsplit(".", 1)[-1] for n in names} == {"q_proj", "down_proj"}
    assert all(model.get_submodule(n).weight.numel() > 0 for n in names)


def test_nothing_left_to_adapt_is_an_error(make_model):
    from gradprune.pruning.plan import LayerPlan, Plan

    model = make_model("mistral")
    apply_plan(model, Plan("mistral", [LayerPlan(i, None, []) for i in range(4)]))  # every MLP channel removed
    method = plugins.RECOVERY.build("lora", {"target_modules": ["gate_proj", "up_proj"]}, "recovery.params")
    with pytest.raises(RecoveryError, match="no gate_proj, up_proj Linear with weights .* nothing to adapt"):
        method.attach(model)


@pytest.mark.parametrize("params, fragment", [
    ({"r": 0}, "recovery.params.r: Input should be greater than or equal to 1"),
    ({"target_modules": ["qkv_proj"]}, "'qkv_proj' is not a projection of the pruned decoder layers"),
    ({"target_modules": []}, "is empty"),
    ({"batch_size": 6, "micro_batch_size": 4}, "must be a multiple of micro_batch_size"),
    ({"lora_r": 8}, "unknown key of recovery plugin 'lora'"),
])
def test_bad_params_are_refused(params, fragment):
    with pytest.raises(PluginError) as e:
        plugins.RECOVERY.validate_params("lora", params, "recovery.params")
    assert fragment in str(e.value)


def test_adapter_saved_in_peft_format_reloads_and_merges_to_the_same_logits(make_model, make_plan, tokens,
                                                                             tmp_path):
    model, plan = _pruned(make_model, make_plan)
    untuned = model(tokens).logits.detach()
    method = LoRARecovery(LoRARecovery.Params(r=4))
    method.name = "lora"
    _train(method, model, tokens)
    recovered = model(tokens).logits.detach()  # the adapter active, not merged
    method.release(model)
    result = RecoveryResult(method, {}, {}, save_merged=True)
    out = save_pruned(model, None, plan, tmp_path / "m", extras=result.checkpoint_extras(None, plan))
    assert (out / "adapter/adapter_config.json").is_file() and (out / "adapter/adapter_model.safetensors").is_file()
    assert (out / "merged" / MANIFEST).is_file()

    merged, _, loaded_plan = load_pruned(out)  # the merged checkpoint
    assert loaded_plan == plan
    assert merged.gradprune_recovery["state"] == "recovered"
    assert merged.gradprune_recovery["form"] == "merged checkpoint"
    on_load, _, _ = load_pruned(out, merge=False)  # base + adapter through peft, not merged
    assert type(on_load).__name__.startswith("PeftModel")
    untuned_again, _, _ = load_pruned(out, recovered=False)
    assert untuned_again.gradprune_recovery["state"] == "untuned"
    with torch.no_grad():
        assert torch.equal(untuned_again(tokens).logits, untuned)
        assert torch.equal(on_load(input_ids=tokens).logits, recovered)
        assert torch.allclose(merged(tokens).logits, recovered, atol=1e-4, rtol=0)
    (out / "merged").rename(tmp_path / "elsewhere")  # the merged copy deleted: the adapter is merged on load
    again, _, _ = load_pruned(out)
    assert again.gradprune_recovery["form"] == "adapter merged on load"
    with torch.no_grad():
        assert torch.allclose(again(tokens).logits, recovered, atol=1e-4, rtol=0)
