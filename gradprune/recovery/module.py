"""Recovery training as a Lightning ``fit``: the LightningModule (loss, AdamW, warm-up + decay schedule)
and the Trainer it runs on (the recipe's accelerator and precision; accumulation and clipping from the
method's params).

The transformers model is held outside the module's tree, as in calibration: Lightning neither moves it
(its teardown would ``.cpu()`` it after ``fit``) nor converts it (``bf16-true`` would cast buffers such as
RoPE's ``inv_freq``), so it stays on the device and in the dtype the run loaded it with, where the
evaluations before and after recovery see it.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import lightning as L
import torch

from gradprune.errors import RecoveryError
from gradprune.recovery.method import SCHEDULES, TrainingParams
from gradprune.recovery.training_data import TrainingSet, pad_batch


@dataclass
class FitResult:
    """What the training did: optimizer steps, tokens, time and the loss per optimizer step."""

    steps: int
    micro_batches: int
    tokens: int
    trained_tokens: int
    seconds: float
    #: (optimizer step, mean loss of its micro-batches, learning rate it used)
    curve: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class RecoveryModule(L.LightningModule):
    """Trains the given parameters of a held model on a :class:`TrainingSet` (automatic optimization)."""

    def __init__(self, model: torch.nn.Module, trainable: list, data: TrainingSet, params: TrainingParams,
                 total_steps: int, pad_id: int) -> None:
        super().__init__()
        self._held = (model, trainable)
        self.data, self.params, self.total_steps, self.pad_id = data, params, total_steps, pad_id
        self.losses: list[float] = []  # per micro-batch (the progress display reads the last)
        self.curve: list[tuple[int, float, float]] = []
        self.tokens = self.trained_tokens = 0
        self._step_losses: list[float] = []
        self._step_lr = params.learning_rate

    @property
    def model(self) -> torch.nn.Module:
        """The model being recovered."""
        return self._held[0]

    def train_dataloader(self):
        """The examples in a seeded order, reshuffled every epoch, in right-padded micro-batches."""
        generator = torch.Generator().manual_seed(self.params.seed)
        return torch.utils.data.DataLoader(self.data.examples, batch_size=self.params.micro_batch_size, shuffle=True,
                                           generator=generator, collate_fn=partial(pad_batch, pad_id=self.pad_id))

    def configure_optimizers(self):
        """AdamW on the trainable parameters; the learning rate warms up, then follows the schedule per step."""
        from transformers import get_scheduler

        p = self.params
        optimizer = torch.optim.AdamW(self._held[1], lr=p.learning_rate, weight_decay=p.weight_decay)
        scheduler = get_scheduler(SCHEDULES[p.schedule], optimizer, num_warmup_steps=p.warmup_steps,
                                  num_training_steps=self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        self.model.train()  # the adapters' dropout on (Lightning only sets the mode of its own tree)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"], use_cache=False).loss
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RecoveryError(f"recovery: the training loss is {value} at optimizer step {self.trainer.global_step} "
                                f"(lower recovery.params.learning_rate, or use trainer.precision: bf16-mixed / 32-true)")
        self.losses.append(value)
        self._step_losses.append(value)
        # the scheduler moves after the optimizer step: this is the rate the coming step uses
        self._step_lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.tokens += batch["tokens"]
        self.trained_tokens += batch["trained_tokens"]
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.trainer.global_step
        if self._step_losses and step > (self.curve[-1][0] if self.curve else 0):  # an optimizer step was taken
            self.curve.append((step, sum(self._step_losses) / len(self._step_losses), self._step_lr))
            self._step_losses = []

    def on_train_end(self) -> None:
        self.model.eval()


def total_steps(n_examples: int, params: TrainingParams) -> tuple[int, int]:
    """(optimizer steps, micro-batches) the training takes: ``max_steps`` or every epoch, whichever ends first."""
    per_epoch_micro = math.ceil(n_examples / params.micro_batch_size)
    per_epoch = math.ceil(per_epoch_micro / params.accumulation)
    steps = per_epoch * params.epochs if params.max_steps is None else min(params.max_steps,
                                                                           per_epoch * params.epochs)
    micro = min(per_epoch_micro * params.epochs, steps * params.accumulation)
    return steps, micro


def fit_recovery(model: torch.nn.Module, trainable: list, data: TrainingSet, params: TrainingParams, trainer_cfg: Any,
                 pad_id: int, progress: Any = None) -> FitResult:
    """Train ``trainable`` (parameters of ``model``) on ``data`` with a Lightning Trainer built from the recipe's
    ``trainer_cfg``; the model stays where it is and is left in eval mode."""
    from gradprune.calibration import activation_checkpointing
    from gradprune.memory.release import dismantle_trainer
    from gradprune.trainer import build_trainer

    steps, _ = total_steps(len(data.examples), params)
    trainer = build_trainer(trainer_cfg, [progress] if progress is not None else [], max_epochs=params.epochs,
                            max_steps=steps, accumulate_grad_batches=params.accumulation,
                            gradient_clip_val=params.max_grad_norm)
    module = RecoveryModule(model, trainable, data, params, steps, pad_id)
    t0 = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            if params.gradient_checkpointing:
                stack.enter_context(activation_checkpointing(model))
            stack.callback(model.eval)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                trainer.fit(module)
        return FitResult(trainer.global_step, len(module.losses), module.tokens, module.trained_tokens,
                         time.perf_counter() - t0, module.curve)
    finally:
        # the Trainer and the module point at each other, and the Trainer at the optimizer and its states:
        # freed when this returns (before the recovered evaluation), not when the cycle collector runs
        dismantle_trainer(trainer, module)
