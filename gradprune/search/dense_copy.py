"""The dense model's weights kept in host memory across a search worker's trials.

Every trial prunes its own copy of the dense model, and loading it from the checkpoint each time reads
the whole model from disk again (minutes for a 70B model). A worker instead keeps one host copy of the
dense weights and buffers after the first load, and each later trial of the same model builds its model
on the meta device and copies the weights from that copy onto its device. The copy is kept only when the
host has the memory for it beside what the trial itself needs there (on a CPU run, the whole trial);
otherwise every trial loads from disk and ``run.json``'s ``model.loading`` says why.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from rich.console import Console


def _bytes(state: dict[str, Any]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


class DenseCopy:
    """``load(recipe)`` is the search's loader for ``run_experiment``: the first trial of a model loads it
    from disk (and keeps a host copy when it fits), the later ones restore it from the copy."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console
        self.key: str | None = None
        self.params: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.model_cls: type | None = None
        self.config = self.generation_config = self.tokenizer = self.identity = None
        self.declined: dict[str, str] = {}  # key -> why no copy is kept

    def _key(self, recipe: Any) -> str:
        from gradprune.models.loading import model_identity
        from gradprune.trainer import run_device

        return json.dumps([model_identity(recipe.model), recipe.model.model_dump(mode="json"),
                           str(run_device(recipe.trainer))], sort_keys=True)

    def load(self, recipe: Any):
        """The loaded dense model of ``recipe`` (a :class:`gradprune.run.Loaded`)."""
        from gradprune.parallel import is_fsdp
        from gradprune.run import load_stage

        if is_fsdp(recipe.trainer):  # each rank reads only its own shards: nothing to keep
            return load_stage(recipe)
        key = self._key(recipe)
        if key == self.key:
            return self._restore(recipe)
        self._drop()
        loaded = load_stage(recipe)
        why = self.declined.get(key) or self._room(recipe, loaded.model)
        if why is None:
            self._keep(key, loaded)
            loaded.loading = f"full (a host copy of the dense weights is kept for the next trials: {self._size()})"
        else:
            self.declined[key] = why
            loaded.loading = f"full (no host copy of the dense weights: {why})"
        self._say(loaded.loading)
        return loaded

    def _size(self) -> str:
        from gradprune.memory.plan import gib

        return gib(_bytes(self.params) + _bytes(self.buffers))

    def _room(self, recipe: Any, model: Any) -> str | None:
        """Why the host cannot hold a copy beside the trial's own host memory (None when it can)."""
        from gradprune.memory.capacity import host_capacity
        from gradprune.memory.plan import STAGES, gib
        from gradprune.memory.watch import fit_recipe

        need = sum(t.numel() * t.element_size() for t in model.state_dict(keep_vars=True).values())
        fitted = fit_recipe(recipe, model.config)
        plan = fitted.plan
        trial = plan.peak if plan.host_is_device else max(plan.host_peak(s) for s in STAGES)
        host = host_capacity()
        if need + trial > host.usable:
            return (f"it needs {gib(need)} of host memory beside the trial's {gib(trial)}, and the host has "
                    f"{gib(host.usable)} to give")
        return None

    def _keep(self, key: str, loaded: Any) -> None:
        import torch

        pin = torch.cuda.is_available() and next(loaded.model.parameters()).is_cuda
        seen: dict[int, str] = {}
        for name, p in loaded.model.named_parameters(remove_duplicate=False):
            if id(p) in seen:
                continue  # a tied weight: tied again on restore
            seen[id(p)] = name
            host = torch.empty(p.shape, dtype=p.dtype, pin_memory=pin)
            host.copy_(p.detach())
            self.params[name] = host
        self.buffers = {name: b.detach().to("cpu", copy=True) for name, b in loaded.model.named_buffers()}
        self.key, self.model_cls = key, type(loaded.model)
        self.config = copy.deepcopy(loaded.model.config)
        self.generation_config = copy.deepcopy(getattr(loaded.model, "generation_config", None))
        self.tokenizer, self.identity = loaded.tokenizer, loaded.identity

    def _restore(self, recipe: Any):
        from gradprune.run import load_stage
        from gradprune.sharding import assemble
        from gradprune.trainer import run_device

        device = run_device(recipe.trainer)
        state = {name: t.to(device, copy=True) for name, t in self.params.items()}
        buffers = {name: t.to(device, copy=True) for name, t in self.buffers.items()}
        model = assemble(self.model_cls, copy.deepcopy(self.config), state, buffers,
                         copy.deepcopy(self.generation_config), "dense copy").eval()
        loaded = load_stage(recipe, model, self.tokenizer, self.identity)
        loaded.loading = "host copy (the dense weights copied from host memory, not read from disk)"
        return loaded

    def _drop(self) -> None:
        self.key, self.params, self.buffers = None, {}, {}
        self.config = self.generation_config = self.tokenizer = self.identity = self.model_cls = None

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"dense model: {text}", style="dim", markup=False, highlight=False, soft_wrap=True)
