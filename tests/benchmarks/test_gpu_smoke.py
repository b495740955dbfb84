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
         "--ppl-windows", "4", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert {r["device"] for r in res["table"]} == {"cpu"}
    stages = [r["stage"].strip() for r in res["table"]]
    for stage in ("checkpoint: build + write", "load: from_pretrained", "calibrate (taylor + 4 stats)",
                  "search trial 1 (whole run)", "search trial 2 (whole run)", "perplexity wikitext2 (hub)",
                  "lm-eval piqa (hub schema)"):
        assert stage in stages
    cal = res["calibration"]
    assert cal["bare"]["tokens_per_s"] > 0 and cal["calibrate"]["tokens_per_s"] > 0
    assert cal["calibrate"]["hook_bytes_per_param"] < 16.5  # fp32: g read once, the fp32 buffer read and written
    trials = res["search"]["trials"]
    assert len(trials) == 2 and all(t["peak_bytes"] > 0 for t in trials)
    assert [t["devices"]["calibration"] for t in trials] == ["cpu", "cpu"]
    assert all(0.005 < t["metrics"]["pruning_ratio"] < 0.015 for t in trials)
    assert all(0 <= t["metrics"]["acc_piqa"] <= 1 and t["metrics"]["ppl"] > 1 for t in trials)
