"""Calibration strategies: supported names pass, every other one is refused at validation with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradprune.errors import RecipeError
from gradprune.parallel import (
    REFUSED_STRATEGIES,
    SUPPORTED_STRATEGIES,
    device_count,
    settle_strategy,
    strategy_refusal,
)
from gradprune.recipe import Recipe, validate_dict
from gradprune.strategy import resolve_strategy

TINY = str(Path(__file__).resolve().parents[1] / "recipes/tiny.yaml")

# name -> a fragment of its reason
REFUSED = {
    "fsdp_cpu_offload": "FSDP1",
    "fsdp_full_shard": "FSDP1",
    "deepspeed": "DeepSpeed engine",
    "deepspeed_stage_1": "DeepSpeed engine",
    "deepspeed_stage_2": "DeepSpeed engine",
    "deepspeed_stage_2_offload": "DeepSpeed engine",
    "deepspeed_stage_3": "DeepSpeed engine",
    "deepspeed_stage_3_offload": "DeepSpeed engine",
    "deepspeed_stage_3_offload_nvme": "DeepSpeed engine",
    "ddp_spawn": "worker processes",
    "ddp_fork": "worker processes",
    "ddp_notebook": "worker processes",
    "ddp_spawn_find_unused_parameters_true": "worker processes",
    "ddp_notebook_find_unused_parameters_false": "worker processes",
    "ddp_find_unused_parameters_true": "DistributedDataParallel, which calibration does not use",
    "ddp_find_unused_parameters_false": "DistributedDataParallel, which calibration does not use",
    "xla": "XLA worker processes",
    "xla_debug": "XLA worker processes",
    "single_xla": "TPU",
    "single_tpu": "TPU",
    "dp": "not a strategy calibration supports",
    "fsdpx": "not a strategy calibration supports",  # a family matches itself and its _variants only
}


def _trainer(strategy: str, **kw) -> dict:
    return {"trainer": {"accelerator": "cpu", "strategy": strategy, **kw}}


@pytest.mark.parametrize(("name", "fragment"), REFUSED.items())
def test_refused_strategies_name_their_reason(name, fragment):
    assert fragment in strategy_refusal(name)
    with pytest.raises(RecipeError, match=rf"trainer\.strategy: '{name}' .*{fragment}"):
        validate_dict(_trainer(name), "r.yaml")
    with pytest.raises(RecipeError, match=fragment):  # the same refusal where the Trainer is built
        resolve_strategy(name)


@pytest.mark.parametrize("name", SUPPORTED_STRATEGIES)
def test_supported_strategies_validate(name):
    assert strategy_refusal(name) is None
    assert validate_dict(_trainer(name), "r.yaml").trainer.strategy == name


def test_every_lightning_strategy_is_supported_or_refused_for_a_reason():
    from lightning.pytorch.strategies import StrategyRegistry

    for name in StrategyRegistry.available_strategies():
        why = strategy_refusal(name)
        assert name in SUPPORTED_STRATEGIES or any(why == r for r in REFUSED_STRATEGIES.values()), name


def test_single_device_needs_one_device():
    for devices in (1, "1", [0], [3], "0,"):
        validate_dict(_trainer("single_device", devices=devices), "r.yaml")
    validate_dict(_trainer("single_device", devices="auto"), "r.yaml")  # one CPU
    for devices in (2, "2", -1, [0, 1], "0,1"):
        with pytest.raises(RecipeError, match="'single_device' runs on one device"):
            validate_dict(_trainer("single_device", devices=devices), "r.yaml")
    with pytest.raises(RecipeError, match="'single_device' runs on one device"):  # every GPU
        validate_dict({"trainer": {"accelerator": "gpu", "strategy": "single_device", "devices": "auto"}}, "r.yaml")


def test_resolve_strategy():
    # Lightning's registered "single_device" is SingleDeviceStrategy(device="cpu") whatever the accelerator
    assert resolve_strategy("single_device") == "auto"
    assert resolve_strategy("auto") == "auto"
    assert type(resolve_strategy("ddp")).__name__ == "ShardedCalibrationStrategy"
    with pytest.raises(RecipeError, match="runs on one device"):
        resolve_strategy("single_device", devices=2)


@pytest.mark.parametrize(
    ("devices", "accelerator", "expected"),
    [(1, "cpu", 1), ("1", "gpu", 1), ([0], "gpu", 1), ("0,", "gpu", 1), ("0,1", "gpu", 2), (4, "cpu", 4),
     ("auto", "cpu", 1), ("auto", "gpu", None), ("auto", "auto", None), (-1, "cpu", None), ("-1", "gpu", None)],
)
def test_device_count(devices, accelerator, expected):
    assert device_count(devices, accelerator) == expected


@pytest.mark.parametrize(("devices", "accelerator"), [(2, "cpu"), ([0, 1], "gpu"), (-1, "cpu"), ("auto", "gpu")])
def test_auto_on_several_devices_is_calibrations_ddp(devices, accelerator):
    # Lightning's own pick there is DDP with the DistributedDataParallel wrapper, which fails at setup
    # ("DistributedDataParallel is not needed when a module doesn't have any parameter that requires a gradient")
    assert settle_strategy("auto", devices, accelerator) == "ddp"
    assert type(resolve_strategy("auto", devices, accelerator)).__name__ == "ShardedCalibrationStrategy"
    assert settle_strategy("auto", 1, accelerator) == "auto"
    assert settle_strategy("ddp", 1, accelerator) == "ddp"


def test_single_device_trainer_uses_the_accelerator_device():
    from gradprune.trainer import run_device

    cfg = Recipe.model_validate(_trainer("single_device", devices=1)).trainer
    assert run_device(cfg).type == "cpu"


@pytest.mark.parametrize("name", ["fsdp_cpu_offload", "deepspeed_stage_2"])
def test_validate_command_refuses(name, capfd):
    from gradprune.cli import main

    code = main(["validate", TINY, f"trainer.strategy={name}"])
    err = capfd.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"trainer.strategy: '{name}'" in lines[0], err
