"""Memory across a search's trials: the third trial's peak resident set against the first's.

    .venv/bin/python benchmarks/search_memory.py            # ~100 M-parameter model, 3 trials (~5 min here)
    .venv/bin/python benchmarks/search_memory.py --layers 2  # a quick look

A Mistral-shaped model built from a config (hidden 768, 12 layers, MLP 3072, the embedded tokenizer's
vocabulary: ~105 M parameters, fp32, random weights) is saved to a temporary folder, and
``gradprune search`` (the command, in its own process) runs three trials on it that differ only in the
calibration seed, so each calibrates anew (first-order Taylor + the four statistics: the fp32
mean-gradient buffer), prunes, and evaluates (perplexity, two tiny lm-eval tasks, the proxies). Each
trial's run.json holds its stages' resident-set peaks above the resident set before the trial
(``memory.stages``, ``memory.rss_before_bytes``); a trial's peak is the largest of them plus that.
Whatever a trial left alive would be under the next one's: target trial 3 ≤ 1.05 × trial 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def save_model(folder: Path, layers: int) -> int:
    """The random model and the embedded tokenizer in ``folder``; returns the parameter count."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from gradprune.assets import MODEL_DIR

    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    config = MistralConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_hidden_layers=layers,
                           num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=512,
                           tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = MistralForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = save_model(tmp / "model", args.layers)
        spec = {"base": str(ROOT / "recipes/tiny.yaml"), "grid": {"calibration.seed": [0, 1000, 2000]},
                "overrides": [f"model.name_or_path={tmp / 'model'}", "calibration.num_samples=16",
                              "calibration.seq_len=64", "calibration.batch_size=8", "eval.limit=16",
                              "eval.ppl_max_windows=8", "eval.tasks=[tiny_boolq,tiny_piqa]", "eval.proxy_windows=8"],
                "output_dir": str(tmp / "search")}
        (tmp / "search.yaml").write_text(json.dumps(spec))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "GRADPRUNE_CACHE": str(tmp / "cache")}
        cmd = [sys.executable, "-m", "gradprune.cli", "search", str(tmp / "search.yaml")]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
            return 1
        peaks = []
        for number in range(3):
            mem = json.loads((tmp / f"search/trials/trial_{number}/run.json").read_text())["memory"]
            stage_peaks = {s: v["peak_bytes"] for s, v in mem["stages"].items()}
            peaks.append(mem["rss_before_bytes"] + max(stage_peaks.values()))
            print(f"trial {number + 1}: peak RSS {peaks[-1] / 2**20:7.1f} MiB (before the trial "
                  f"{mem['rss_before_bytes'] / 2**20:7.1f} MiB; stages above it: "
                  + ", ".join(f"{s} {v / 2**20:.0f}" for s, v in stage_peaks.items()) + " MiB)")
        print(f"model: {n / 1e6:.1f} M parameters (fp32, {n * 4 / 2**20:.0f} MiB)")
        print(f"ratio trial 3 / trial 1 peak RSS {peaks[2] / peaks[0]:.3f} (target <= 1.05); trial 3 / trial 2 "
              f"{peaks[2] / peaks[1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
