"""Post-pruning proxies against an independent computation (torch.nn.functional on the same windows)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradprune.cut.surgery import apply_plan
from gradprune.eval.proxies import dense_reference, proxy_metrics, proxy_text_name
from gradprune.pruning.plan import LayerPlan, Plan
from gradprune.recipe import EvalSection
from tests.conftest import make_model, make_tokenizer


def test_proxies_equal_the_direct_computation(corpus_file, tokenizer):
    cfg = EvalSection(run="ppl", ppl_datasets=[str(corpus_file)], proxy_windows=6, proxy_seq_len=16)
    model = make_model("mistral")
    ref = dense_reference(model, tokenizer, cfg)
    dense_logits = model(input_ids=ref.ids).logits[:, :-1].detach()
    plan = Plan("mistral", [LayerPlan(1, [0], list(range(0, 96, 2)))])
    apply_plan(model, plan)
    metrics, info = proxy_metrics(model, ref)
    pruned_logits = model(input_ids=ref.ids).logits[:, :-1].detach()
    targets = ref.ids[:, 1:]
    V = dense_logits.shape[-1]
    loss = F.cross_entropy(pruned_logits.reshape(-1, V), targets.reshape(-1))
    kl = F.kl_div(pruned_logits.log_softmax(-1).reshape(-1, V), dense_logits.log_softmax(-1).reshape(-1, V),
                  reduction="batchmean", log_target=True)
    flips = (dense_logits.argmax(-1) != pruned_logits.argmax(-1)).float().mean()
    assert metrics["proxy_loss"] == pytest.approx(float(loss), rel=1e-5)
    assert metrics["proxy_kl"] == pytest.approx(float(kl), rel=1e-4)
    assert metrics["proxy_kl"] > 0
    assert metrics["proxy_flip"] == pytest.approx(float(flips))
    dense_loss = F.cross_entropy(dense_logits.reshape(-1, V), targets.reshape(-1))
    assert metrics["proxy_dense_loss"] == pytest.approx(float(dense_loss), rel=1e-5)
    assert info["windows"] == 6 and info["tokens"] == 6 * 15


def test_windows_are_fixed_and_spread_over_the_text(corpus_file, tokenizer):
    cfg = EvalSection(run="ppl", ppl_datasets=[str(corpus_file)], proxy_windows=4, proxy_seq_len=16)
    a = dense_reference(make_model("mistral"), tokenizer, cfg)
    b = dense_reference(make_model("llama", seed=3), tokenizer, cfg)
    assert torch.equal(a.ids, b.ids)  # the same windows whatever the model (and the trial)
    first = tokenizer(corpus_file.read_text())["input_ids"][:16]
    assert a.ids[0].tolist() == first and a.ids[1].tolist() != a.ids[0].tolist()


def test_no_proxies_without_a_text_or_when_switched_off():
    assert proxy_text_name(EvalSection(run="none")) is None
    assert proxy_text_name(EvalSection(proxy_windows=0)) is None
    assert proxy_text_name(EvalSection(run="none", proxy_text="embedded")) == "embedded"
    assert proxy_text_name(EvalSection()) == "wikitext2"


def test_too_short_a_text_is_a_clear_error(tmp_path):
    from gradprune.errors import EvalError

    p = tmp_path / "short.txt"
    p.write_text("the cat owns a red box")
    cfg = EvalSection(run="ppl", ppl_datasets=[str(p)], proxy_windows=4, proxy_seq_len=64)
    with pytest.raises(EvalError, match="proxy_windows"):
        dense_reference(make_model("mistral"), make_tokenizer(p.read_text() * 3), cfg)
