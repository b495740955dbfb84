"""evaluate(): eval.run, model state kept, progress off a terminal."""

from __future__ import annotations

import io

import torch
from rich.console import Console

from gradprune.eval import evaluate


def _console(terminal: bool = False) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=120), buf


def test_run_none_does_nothing(eval_model, eval_tokenizer, eval_cfg):
    res = evaluate(eval_model, eval_tokenizer, eval_cfg(run="none", tasks=["nope"]))
    assert res.metrics == {} and res.info["run"] == "none"


def test_run_ppl_only_keeps_mode_and_dtype(eval_model, eval_tokenizer, eval_cfg, ppl_file):
    eval_model.train()
    eval_model.model.layers[0].eval()  # a mixed state must come back as it was
    console, buf = _console()
    cfg = eval_cfg(run="ppl", ppl_datasets=[str(ppl_file)], ppl_seq_len=32, ppl_max_windows=3)
    res = evaluate(eval_model, eval_tokenizer, cfg, console=console)
    assert set(res.metrics) == {"ppl", "ppl_held_out"} and "zeroshot" not in res.info
    assert eval_model.training and not eval_model.model.layers[0].training
    assert eval_model.model.layers[1].training
    assert all(p.dtype == torch.float32 for p in eval_model.parameters())
    assert "ppl held_out @32: ppl" in buf.getvalue() and "(3 windows)" in buf.getvalue()


def test_all_on_a_non_terminal_prints_one_line_per_row(eval_model, eval_tokenizer, eval_cfg, ppl_file):
    console, buf = _console()
    cfg = eval_cfg(ppl_datasets=[str(ppl_file)], ppl_seq_len=32, ppl_max_windows=2, tasks=["boolq", "piqa"])
    res = evaluate(eval_model, eval_tokenizer, cfg, console=console)
    assert list(res.metrics)[:3] == ["ppl", "acc_mean", "acc_norm_mean"]
    lines = buf.getvalue().splitlines()
    # headed: outside dense_metrics the evaluated model is the pruned one
    assert [ln.split(":")[0] for ln in lines] == ["pruned model evaluation", "ppl held_out @32", "task boolq",
                                                  "task piqa"]
    assert "\x1b[" not in buf.getvalue()  # no cursor movement or colour codes in a log


def test_live_progress_on_a_terminal(eval_model, eval_tokenizer, eval_cfg):
    console, buf = _console(terminal=True)
    evaluate(eval_model, eval_tokenizer, eval_cfg(run="zeroshot", tasks=["boolq"]), console=console)
    assert "task boolq" in buf.getvalue() and "24/24" in buf.getvalue()
