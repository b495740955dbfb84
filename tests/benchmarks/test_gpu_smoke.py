"""benchmarks/gpu_smoke.py runs end to end on a tiny shape on CPU (the GPU numbers come from a GPU run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_smoke_runs_on_a_tiny_cpu_shape(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu_smoke.py"), "--shape", "tiny", "--device", "cpu",
         "--dtype", "float32", "--seq-len", "16", "--samples", "4", "--batch-size", "2", "--eval-limit", "8",
         "--ppl-windows", "4", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    cal = res["calibration"]
    for tag in ("plain", "checkpointing"):
        assert cal[f"bare_{tag}"]["tokens_per_s"] > 0 and cal[f"gradprune_{tag}"]["tokens_per_s"] > 0
    assert set(res["run"]["devices"].values()) == {"cpu"}
    assert set(res["run"]["devices"]) == {"load", "dense_eval", "calibration", "surgery", "eval"}
    assert 0.15 < res["run"]["metrics"]["pruning_ratio"] < 0.25
