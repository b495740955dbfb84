"""Regenerate every embedded asset from one seed: tasks, corpus files, tokenizer and the trained model.

    python -m gradprune.assets.train [--seed 0] [--steps 1600] [--out gradprune/assets]

Writes `<out>/tasks/`, `<out>/corpus/{calibration,ppl}.txt` and `<out>/model/` (safetensors, config,
tokenizer, generation config, training_report.json), then prints held-out perplexity and task accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from gradprune.assets import ASSETS_DIR, TASK_NAMES
from gradprune.assets.corpus import DOC_SEPARATOR, corpus_docs, corpus_text
from gradprune.assets.task_files import TASK_KINDS, build_all_tasks, write_tasks
from gradprune.assets.task_items import BUILDERS

# Corpus files: calibration is a slice of the training stream; ppl.txt is its own, never-trained stream.
CALIBRATION_DOCS = 4000
PPL_DOCS = 1000
TOKENIZER_DOCS = 20000
VOCAB_SIZE = 1024
MAX_POSITIONS = 512
ARCH = {"hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m gradprune.assets.train", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--answer-weight", type=float, default=8.0, help="loss weight of the token after 'Answer:'")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=ASSETS_DIR)
    p.add_argument("--skip-eval", action="store_true", help="skip the final perplexity / lm-eval report")
    return p.parse_args(argv)


def build_model(vocab_size: int, tokenizer):
    """A fresh GQA MistralForCausalLM of the embedded size, with tied input/output embeddings."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=vocab_size, max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
        sliding_window=None, rope_theta=10000.0, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **ARCH,
    )
    return MistralForCausalLM(config)


def training_windows(tokenizer, seed: int, held_out, n_windows: int, seq_len: int):
    """Tokenize fresh training documents until `n_windows` windows of `seq_len` tokens are filled."""
    import torch

    ids: list[int] = []
    sep = tokenizer(DOC_SEPARATOR)["input_ids"]
    docs = corpus_docs(seed, "train", 10**9, held_out)
    while len(ids) < n_windows * seq_len:
        chunk = [next(docs) for _ in range(5000)]
        for enc in tokenizer(chunk)["input_ids"]:
            ids += enc + sep
    windows = torch.tensor(ids[: n_windows * seq_len], dtype=torch.long).view(n_windows, seq_len)
    return windows[torch.randperm(n_windows, generator=torch.Generator().manual_seed(seed))]


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def answer_weights(batch, answer_ids: tuple[int, int], weight: float):
    """Per-target loss weights: `weight` for the first token after "Answer:", 1 elsewhere.

    The answer token is about 1 in 40 tokens of task-shaped text, and a yes/no answer is a single
    bit next to many unpredictable names; without extra weight a model this size and budget only
    learns the yes/no prior (an earlier run answered every item with the same word).
    """
    import torch

    w = torch.ones(batch.size(0), batch.size(1) - 1)
    is_answer = (batch[:, :-2] == answer_ids[0]) & (batch[:, 1:-1] == answer_ids[1])
    w[:, 1:][is_answer] = weight
    return w


def train_model(model, windows, args: argparse.Namespace, answer_ids: tuple[int, int]) -> list[float]:
    """AdamW with warm-up + cosine schedule over `windows`; returns the mean token loss every 100 steps."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    model.train()
    losses, running = [], 0.0
    start = time.time()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup=min(100, args.steps // 10 + 1))
        i = (step * args.batch_size) % len(windows)
        batch = windows[i : i + args.batch_size]
        logits = model(input_ids=batch).logits[:, :-1]
        token_loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="none"
        ).view(batch.size(0), -1)
        w = answer_weights(batch, answer_ids, args.answer_weight)
        loss = (token_loss * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += token_loss.mean().item()  # logged unweighted: comparable to perplexity
        if (step + 1) % 100 == 0:
            losses.append(round(running / 100, 4))
            print(f"step {step + 1}/{args.steps} loss {running / 100:.4f} ({time.time() - start:.0f}s)", flush=True)
            running = 0.0
    model.eval()
    return losses


def write_corpus_files(out: Path, seed: int, held_out) -> None:
    """calibration.txt (start of the training stream) and ppl.txt (a separate held-out stream)."""
    corpus_dir = out / "corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    (corpus_dir / "calibration.txt").write_text(corpus_text(seed, "train", CALIBRATION_DOCS, held_out), "utf-8")
    (corpus_dir / "ppl.txt").write_text(corpus_text(seed, "ppl", PPL_DOCS, held_out), "utf-8")


def save_model(model, tokenizer, model_dir: Path) -> None:
    """safetensors weights, config, generation config and tokenizer files."""
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    # transformers 5 records its own class name here; the 4.x name loads in both major versions.
    cfg_path = model_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text("utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", "utf-8")


def report_metrics(model, tokenizer, out: Path) -> dict:
    """Held-out perplexity (seq 128) and lm-eval accuracy, with each task's chance level."""
    from gradprune.assets.evaluate import evaluate_tasks, perplexity

    ppl = perplexity(model, tokenizer, (out / "corpus" / "ppl.txt").read_text("utf-8"), seq_len=128)
    tasks = evaluate_tasks(model, tokenizer, TASK_NAMES, tasks_dir=out / "tasks")
    for task, row in tasks.items():
        row["chance"] = 1.0 / BUILDERS[TASK_KINDS[task]][1]
    mean_acc = sum(r["acc"] for r in tasks.values()) / len(tasks)
    mean_chance = sum(r["chance"] for r in tasks.values()) / len(tasks)
    return {"ppl_seq128": ppl, "tasks": tasks, "acc_mean": mean_acc, "chance_mean": mean_chance}


def main(argv: list[str] | None = None) -> dict:
    """Generate, train, save and report; returns the training report."""
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    tasks, held_out = build_all_tasks(args.seed)
    write_tasks(tasks, args.out / "tasks")
    write_corpus_files(args.out, args.seed, held_out)
    from gradprune.assets.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(corpus_docs(args.seed, "train", TOKENIZER_DOCS, held_out), VOCAB_SIZE, MAX_POSITIONS)
    windows = training_windows(tokenizer, args.seed, held_out, args.steps * args.batch_size, args.seq_len)
    model = build_model(len(tokenizer), tokenizer)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters; vocab {len(tokenizer)}; "
          f"{windows.numel():,} training tokens; data ready in {time.time() - t0:.0f}s", flush=True)
    answer_ids = (tokenizer.convert_tokens_to_ids("Answer"), tokenizer.convert_tokens_to_ids(":"))
    if None in answer_ids or tokenizer.unk_token_id in answer_ids:
        raise RuntimeError("the trained tokenizer lacks single tokens for 'Answer' and ':'")
    losses = train_model(model, windows, args, answer_ids)
    model_dir = args.out / "model"
    save_model(model, tokenizer, model_dir)
    report = {"seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len,
              "lr": args.lr, "answer_weight": args.answer_weight, "threads": args.threads, "train_tokens": windows.numel(), "loss_every_100": losses,
              "train_wall_s": round(time.time() - t0, 1)}
    if not args.skip_eval:
        report.update(report_metrics(model, tokenizer, args.out))
    (model_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "loss_every_100"}, indent=2))
    return report


if __name__ == "__main__":
    main()
