"""What every recovery method shares: the training settings, and the contract of a method.

A recovery method decides *which* weights train after pruning and *how* what was learned is kept; the
training itself (data, Lightning, optimizer, schedule) is the same for every method. The defaults are
LLM-Pruner's recovery recipe (its README command over ``post_training.py``): batch 64 of micro-batches
of 4, cutoff 256 tokens, 2 epochs, learning rate 1e-4 with 100 warm-up steps then linear decay, AdamW
without weight decay, gradients clipped at norm 1 (the transformers Trainer's defaults it runs on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: recipe schedule name -> transformers.get_scheduler name (every one warms up linearly first)
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


class TrainingParams(BaseModel):
    """Training settings every recovery method takes (a method's own params extend these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    learning_rate: float = Field(1e-4, gt=0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = Field(100, ge=0)
    #: passes over the training examples; ``max_steps`` (optimizer steps), when set, ends training first
    epochs: int = Field(2, ge=1)
    max_steps: int | None = Field(None, gt=0)
    #: examples per optimizer step (the global batch) and per forward pass (gradients are accumulated)
    batch_size: int = Field(64, gt=0)
    micro_batch_size: int = Field(4, gt=0)
    #: tokens per example: instruction records are truncated, plain text is cut into windows this long
    cutoff_len: int = Field(256, ge=2)
    #: instruction records: also learn to predict the prompt (False: the loss covers the response only)
    train_on_inputs: bool = False
    weight_decay: float = Field(0.0, ge=0)
    #: clip the gradient norm of each optimizer step (None: no clipping)
    max_grad_norm: float | None = Field(1.0, gt=0)
    #: recompute each decoder layer's activations in the backward pass (less memory, ~1/3 more compute)
    gradient_checkpointing: bool = False
    #: the order of the examples, dropout and the initial adapter weights
    seed: int = 0

    @model_validator(mode="after")
    def _whole_micro_batches(self) -> TrainingParams:
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                             f"({self.micro_batch_size}): a step accumulates whole micro-batches")
        return self

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step."""
        return self.batch_size // self.micro_batch_size


class RecoveryMethod:
    """Base class of recovery methods (registry family ``recovery``).

    The stage freezes every parameter of the model and calls :meth:`attach` (trainable parameters are added
    to, or chosen in, the model in place); it trains the returned parameters, evaluates the model as it then
    is, and calls :meth:`release`, which must leave the model with its untuned weights and plain modules
    again while the method keeps what was learned (the stage then restores every ``requires_grad``);
    :meth:`write` stores what was learned in a pruned checkpoint's folder.
    """

    Params: type[TrainingParams] = TrainingParams
    #: the registry name, set by ``Registry.build``
    name: str = ""

    def __init__(self, params: TrainingParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def attach(self, model: Any) -> list:
        """Make ``model`` trainable the method's way (in place); returns the parameters to train."""
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """What :meth:`attach` did (modules adapted, trainable parameters), for run.json."""
        return {}

    def release(self, model: Any) -> None:
        """Take the method's trainable parts out of ``model``: its untuned weights and modules, exactly."""
        raise NotImplementedError

    def write(self, folder: Path) -> dict[str, Any]:
        """Write what was learned into the pruned checkpoint ``folder``; returns its manifest entry."""
        raise NotImplementedError
