"""Rewrite the memory table of README.md and docs/performance.md from the memory plan itself.

    .venv/bin/python benchmarks/memory_table.py          # rewrite both files
    .venv/bin/python benchmarks/memory_table.py --check  # exit 1 if either differs (tests/memory runs it)

The table plans ``recipes/mistral_20.yaml`` (the grid's base recipe: bf16, first-order Taylor, the four
gradient statistics, the default evaluation) for the configs of Mistral-7B-v0.3, Llama-3-8B and
Llama-2-70B shipped in ``docs/model_configs`` (the public config.json fields; no weights), at the grid's
corners of ``calibration.seq_len``, with and without gradient checkpointing, on one H100 80 GB and on
8 × H100 under FSDP. Nothing is measured: every number is the plan's count of bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", ROOT / "docs/performance.md"]


def table() -> str:
    """The markdown table (see the module docstring)."""
    from gradprune.memory.table import docs_table
    from gradprune.recipe import load_recipe

    return docs_table(ROOT / "docs/model_configs", load_recipe(ROOT / "recipes/mistral_20.yaml"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = p.parse_args()
    from gradprune.memory.table import splice

    body = table()
    stale = []
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        new = splice(text, body)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print("memory table out of date in: " + ", ".join(str(p.relative_to(ROOT)) for p in stale), file=sys.stderr)
        return 1
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
