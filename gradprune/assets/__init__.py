"""The embedded default: a tiny trained Mistral-architecture model, its corpus and its lm-eval tasks.

Paths only; nothing heavy is imported here. `python -m gradprune.assets.train` regenerates everything.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
MODEL_DIR = ASSETS_DIR / "model"
TASKS_DIR = ASSETS_DIR / "tasks"
CORPUS_DIR = ASSETS_DIR / "corpus"
CORPUS_PATH = CORPUS_DIR / "calibration.txt"
PPL_PATH = CORPUS_DIR / "ppl.txt"
REPORT_PATH = MODEL_DIR / "training_report.json"

# lm-eval task names of the YAMLs in TASKS_DIR, with the real task each one mirrors.
TASK_MIRRORS = {
    "tiny_boolq": "boolq",
    "tiny_piqa": "piqa",
    "tiny_hellaswag": "hellaswag",
    "tiny_winogrande": "winogrande",
    "tiny_arc": "arc_easy",
}
TASK_NAMES = list(TASK_MIRRORS)

__all__ = [
    "ASSETS_DIR",
    "CORPUS_DIR",
    "CORPUS_PATH",
    "MODEL_DIR",
    "PPL_PATH",
    "REPORT_PATH",
    "TASKS_DIR",
    "TASK_MIRRORS",
    "TASK_NAMES",
]
