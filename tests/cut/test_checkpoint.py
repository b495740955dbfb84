"""Pruned checkpoints: save -> load_pruned is bitwise exact; uniform plans load with from_pretrained."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from gradprune.cut.checkpoint import MANIFEST, load_pruned, save_pruned
from gradprune.cut.surgery import apply_plan
from gradprune.errors import ModelError, PlanError
from gradprune.pruning.plan import LayerPlan, Plan

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")


def _pruned(make_model, make_plan, arch, seed=0, **kw):
    model = make_model(arch, seed=seed, **kw)
    plan = make_plan(model.config, seed)
    apply_plan(model, plan)
    return model, plan


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tie", [False, True])
def test_save_load_bitwise_identical(arch, tie, make_model, make_plan, tokens, tmp_path):
    model, plan = _pruned(make_model, make_plan, arch, tie=tie)
    out = save_pruned(model, None, plan, tmp_path / "pruned")
    assert not list(tmp_path.glob(".pruned*")), "temp dir left behind"
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt")), "no pickle files"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        loaded, tokenizer, loaded_plan = load_pruned(out)
    assert tokenizer is None and loaded_plan == plan
    assert not loaded.training
    assert torch.equal(loaded(tokens).logits, model(tokens).logits)
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tie
    buffers = dict(model.named_buffers())
    for name, b in loaded.named_buffers():
        assert torch.equal(b, buffers[name]), name
    # the loaded model can be trained further and saved again
    loaded(tokens, labels=tokens).loss.backward()
    save_pruned(loaded, None, loaded_plan, out)  # replaces the earlier checkpoint
    again, _, _ = load_pruned(out)
    assert torch.equal(again(tokens).logits, model(tokens).logits)


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "gemma2", "gemma3_text"])
def test_load_in_another_dtype(arch, make_model, make_plan, tokens, tmp_path):
    model, plan = _pruned(make_model, make_plan, arch, seed=1)
    save_pruned(model, None, plan, tmp_path / "m")
    loaded, _, _ = load_pruned(tmp_path / "m", dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    ref = model
    for p in ref.parameters():  # like from_pretrained(dtype=bf16): parameters cast, rotary buffer stays fp32
        p.data = p.data.to(torch.bfloat16)
    assert torch.equal(loaded(tokens).logits, ref(tokens).logits)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma2", "gemma3_text"])
def test_bf16_model_round_trips(arch, make_model, make_plan, tokens, tmp_path):
    model, plan = _pruned(make_model, make_plan, arch, seed=2)
    model.to(torch.bfloat16)
    save_pruned(model, None, plan, tmp_path / "m")
    loaded, _, _ = load_pruned(tmp_path / "m")
    assert loaded.lm_head.weight.dtype == torch.bfloat16
    assert torch.equal(loaded(tokens).logits, model(tokens).logits)


@pytest.mark.parametrize(
    ("arch", "n_kv"),
    [(a, 2) for a in ARCHS] + [("mistral", 3), ("qwen2", 3), ("qwen3", 3)],
)
def test_uniform_plan_loads_with_from_pretrained(arch, n_kv, make_model, make_uniform_plan, tokens, tmp_path):
    from transformers import AutoModelForCausalLM

    model = make_model(arch, n_kv=4)
    plan = make_uniform_plan(model.config, n_kv=n_kv, n_ch=72)
    apply_plan(model, plan)
    out = save_pruned(model, None, plan, tmp_path / "u")
    config = json.loads((out / "config.json").read_text())
    assert (config["num_key_value_heads"], config["num_attention_heads"], config["head_dim"]) == (
        n_kv,
        2 * n_kv,
        8,
    )
    assert config["intermediate_size"] == 72
    assert json.loads((out / MANIFEST).read_text())["config_rewritten"] is True
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    assert torch.equal(plain(tokens).logits, model(tokens).logits)
    loaded, _, _ = load_pruned(out)
    assert torch.equal(loaded(tokens).logits, model(tokens).logits)


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma3_text"])
def test_uniform_plan_that_transformers_cannot_describe(arch, make_model, make_uniform_plan, tokens, tmp_path):
    # LlamaConfig (and Gemma2Config, Gemma3TextConfig) of later transformers 5 releases require
    # hidden_size % num_attention_heads == 0 even with an explicit head_dim: 64 % 6 != 0, so no rewrite.
    # 5.0 accepts that config, and then the rewritten checkpoint must load with plain from_pretrained.
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    model = make_model(arch, n_kv=4)
    plan = make_uniform_plan(model.config, n_kv=3, n_ch=72)
    apply_plan(model, plan)
    out = save_pruned(model, None, plan, tmp_path / "u")
    manifest = json.loads((out / MANIFEST).read_text())
    try:
        CONFIG_MAPPING[arch](hidden_size=64, num_attention_heads=6, num_key_value_heads=3, head_dim=8)
        rejected = False
    except Exception:  # huggingface_hub's StrictDataclassClassValidationError, not a ValueError
        rejected = True
    assert manifest["config_rewritten"] is not rejected
    if rejected:
        assert "not a multiple of the number of attention heads" in manifest["config_not_rewritten_because"]
        assert json.loads((out / "config.json").read_text())["num_key_value_heads"] == 4
    else:
        assert json.loads((out / "config.json").read_text())["num_key_value_heads"] == 3
        plain = AutoModelForCausalLM.from_pretrained(out).eval()
        assert torch.equal(plain(tokens).logits, model(tokens).logits)
    loaded, _, _ = load_pruned(out)
    assert torch.equal(loaded(tokens).logits, model(tokens).logits)


def test_non_uniform_plan_keeps_dense_config(make_model, make_plan, tmp_path):
    model, plan = _pruned(make_model, make_plan, "mistral")
    out = save_pruned(model, None, plan, tmp_path / "m")
    assert json.loads((out / "config.json").read_text())["intermediate_size"] == 96
    assert json.loads((out / MANIFEST).read_text())["config_rewritten"] is False


def test_tokenizer_is_saved_and_loaded(make_model, make_plan, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(20)}, "<unk>": 23}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")
    model, plan = _pruned(make_model, make_plan, "llama")
    save_pruned(model, tokenizer, plan, tmp_path / "m")
    _, loaded_tok, _ = load_pruned(tmp_path / "m")
    assert loaded_tok("w1 w5")["input_ids"] == tokenizer("w1 w5")["input_ids"]


def test_save_requires_the_plan_to_be_applied(make_model, make_plan, tmp_path):
    model = make_model("llama")
    with pytest.raises(PlanError, match="apply_plan"):
        save_pruned(model, None, make_plan(model.config, 0), tmp_path / "m")
    assert not (tmp_path / "m").exists()
    apply_plan(model, Plan("llama", [LayerPlan(0, [1], None)], {}))
    with pytest.raises(PlanError, match="model_type 'qwen2'"):
        save_pruned(model, None, Plan("qwen2", [LayerPlan(0, [1], None)], {}), tmp_path / "m")
    with pytest.raises(PlanError, match="layer 0 attn_kept: index 2 out of range"):
        save_pruned(model, None, Plan("llama", [LayerPlan(0, [2], None)], {}), tmp_path / "m")
    with pytest.raises(PlanError, match="layer 9 out of range"):
        save_pruned(
            model, None, Plan("llama", [LayerPlan(0, [1], None), LayerPlan(9, [1], None)], {}), tmp_path / "m"
        )


def test_save_refuses_to_replace_foreign_directory(make_model, make_plan, tmp_path):
    model, plan = _pruned(make_model, make_plan, "llama")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not empty and is not a pruned checkpoint"):
        save_pruned(model, None, plan, tmp_path / "results")
    assert (tmp_path / "results" / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    save_pruned(model, None, plan, tmp_path / "empty")  # an empty directory is fine


def test_corrupt_safetensors_is_a_model_error(make_model, make_plan, tmp_path):
    model, plan = _pruned(make_model, make_plan, "llama")
    out = save_pruned(model, None, plan, tmp_path / "m")
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match="model.safetensors.*corrupt or truncated"):
        load_pruned(out)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_pruned(out)


def test_plan_that_does_not_match_the_weights(make_model, make_plan, tmp_path):
    model, plan = _pruned(make_model, make_plan, "llama")
    out = save_pruned(model, None, plan, tmp_path / "m")
    other = Plan("llama", [LayerPlan(lp.layer, lp.attn_kept, None) for lp in plan.layers], {})
    other.save(out / "plan.json")
    with pytest.raises(PlanError, match="plan does not match the saved weights"):
        load_pruned(out)
    Plan("llama", [LayerPlan(0, [5], None)], {}).save(out / "plan.json")
    with pytest.raises(PlanError, match="does not fit the saved config.*index 5 out of range"):
        load_pruned(out)
    (out / "plan.json").write_text("{broken")
    with pytest.raises(PlanError, match="not readable JSON"):
        load_pruned(out)


def test_not_a_pruned_checkpoint(tmp_path):
    with pytest.raises(ModelError, match="is not a directory"):
        load_pruned(tmp_path / "missing")
    with pytest.raises(ModelError, match=f"{MANIFEST} is missing"):
        load_pruned(tmp_path)
    (tmp_path / MANIFEST).write_text(
        json.dumps({"format_version": 1, "dense_config": {"model_type": "gpt2"}})
    )
    Plan("gpt2", [], {}).save(tmp_path / "plan.json")
    with pytest.raises(ModelError, match="'gpt2' is not supported"):
        load_pruned(tmp_path)


def test_run_dir_points_to_its_model_folder(make_model, make_plan, tokens, tmp_path):
    # a run with output.save_model=true writes the checkpoint to <output.dir>/model
    model, plan = _pruned(make_model, make_plan, "llama")
    run_dir = tmp_path / "run"
    save_pruned(model, None, plan, run_dir / "model")
    plan.save(run_dir / "plan.json")  # a run also writes plan.json beside model/
    with pytest.raises(ModelError, match="run's output directory") as info:
        load_pruned(run_dir)
    assert repr(str(run_dir / "model")) in str(info.value)
    loaded, _, _ = load_pruned(run_dir / "model")
    assert torch.equal(loaded(tokens).logits, model(tokens).logits)


def test_load_pruned_is_exported_lazily():
    import subprocess
    import sys

    code = "import sys, gradprune; assert 'torch' not in sys.modules; f = gradprune.load_pruned; print(f.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "gradprune.cut.checkpoint"
