"""A run folder in the real schema (run.json, layers.csv) for the tracker tests, and readers of what each
tracker wrote: MlflowClient, TensorBoard's EventAccumulator, and W&B's offline run file (its LevelDB-style
record log of ``wandb_internal_pb2.Record`` protobufs, parsed with wandb's own message definitions)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from gradprune.record import LAYER_COLUMNS

LOSSES = [2.5, 2.25, 2.0, 1.875]


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A finished run's folder: run.json with a recipe, metrics and calibration losses, and layers.csv."""
    from gradprune.recipe import Recipe

    out = tmp_path / "run"
    out.mkdir()
    record = {"recipe": Recipe().to_dict(),
              "metrics": {"acc_mean": 0.61, "ppl": 12.5, "grad_norm_ratio": 3.2, "grad_noise_exact": True,
                          "pruning_ratio": 0.2, "calibration_loss": None},
              "calibration": {"batches": 4, "loss_per_micro_batch": LOSSES}}
    (out / "run.json").write_text(json.dumps(record))
    (out / "layers.csv").write_text(",".join(LAYER_COLUMNS) + "\n" + ",".join("1" for _ in LAYER_COLUMNS) + "\n")
    return out


def wandb_records(run_file: Path) -> list:
    """Every record of a W&B run file (``run-<id>.wandb``): 7-byte header, then 32 KiB blocks of records
    (crc32 4 bytes, length 2 bytes, type 1 byte: full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the tail of a block too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        chunks += payload
        if kind in (1, 4):  # full or last
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(chunks)
            out.append(rec)
            chunks = b""
    return out
