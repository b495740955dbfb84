"""On-disk store of calibration results, so trials with the same calibration key share one pass.

One folder per key: ``scores.safetensors`` (every estimator's per-group scores) and ``result.json``
(per-layer statistics, throughput, provenance). Written into a temp folder and renamed, so a
reader sees a whole entry or none.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from gradprune.files import temp_prefix

if TYPE_CHECKING:  # importing calibration pulls in Lightning; only a trial needs it
    from gradprune.calibration import CalibrationResult


class CalibrationStore:
    """get/put of CalibrationResult by key; counts how many calibrations this process stored."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.puts = 0
        self.hits = 0

    def _dir(self, key: str) -> Path:
        return self.root / key[:32]

    def get(self, key: str) -> CalibrationResult | None:
        """The stored result, or None."""
        from safetensors.torch import load_file

        from gradprune.calibration import CalibrationResult

        d = self._dir(key)
        if not (d / "result.json").exists():
            return None
        try:
            meta = json.loads((d / "result.json").read_text())
            flat = load_file(str(d / "scores.safetensors"))
        except (OSError, ValueError, RuntimeError):  # a damaged entry is a miss: calibrate again
            return None
        scores: dict = {}
        for name, tensor in flat.items():
            est, layer, kind = name.split("|")
            scores.setdefault(est, {})[(int(layer), kind)] = tensor
        self.hits += 1
        return CalibrationResult.from_json(scores, meta, reused_calibration=True)

    def put(self, key: str, res: CalibrationResult) -> None:
        """Store ``res`` under ``key`` (a concurrent writer of the same key is harmless)."""
        from safetensors.torch import save_file

        final = self._dir(key)
        if final.exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix("entry"), suffix=".tmp", dir=self.root))
        try:
            flat = {f"{est}|{layer}|{kind}": t.contiguous()
                    for est, sc in res.scores.items() for (layer, kind), t in sc.items()}
            save_file(flat, str(tmp / "scores.safetensors"))
            meta = {**res.to_json(), "key": key}
            (tmp / "result.json").write_text(json.dumps(meta))
            for f in tmp.iterdir():  # durable before the rename makes the entry visible
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, final)
            self.puts += 1
        except OSError:
            if final.exists():  # another worker stored the same key first
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def count(self) -> int:
        """How many calibrations are stored."""
        return sum(1 for d in self.root.glob("*") if (d / "result.json").exists()) if self.root.exists() else 0
