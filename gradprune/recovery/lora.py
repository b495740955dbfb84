"""LoRA recovery through peft: low-rank adapters on the pruned projections, the base weights frozen.

Every targeted Linear gets its adapter whatever its width after pruning (each layer keeps its own number
of heads and channels); a Linear pruned to nothing (a layer whose MLP or attention was removed whole)
has no weight to adapt and is left out. What was learned is kept as peft's adapter state and written in
peft's format, so ``peft.PeftModel.from_pretrained`` reads it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from gradprune.cut.recovered import ADAPTER_DIR
from gradprune.errors import RecoveryError
from gradprune.recovery.method import RecoveryMethod, TrainingParams

#: the projections of a decoder layer, as the llama-style architectures gradprune prunes name them
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRAParams(TrainingParams):
    """LoRA's own settings (LLM-Pruner's: r 8, alpha 16, dropout 0.05, all 7 projections) and the training's."""

    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    #: projection names (null: all 7); every pruned layer's projection of that name gets an adapter
    target_modules: list[str] | None = None

    @field_validator("target_modules")
    @classmethod
    def _projections(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError(f"is empty: list projections to adapt ({', '.join(PROJECTIONS)}), or null for all")
        unknown = [m for m in v if m not in PROJECTIONS]
        if unknown:
            from gradprune.errors import did_you_mean

            hint = did_you_mean(unknown[0], PROJECTIONS)
            raise ValueError(f"{', '.join(map(repr, unknown))} is not a projection of the pruned decoder layers"
                             f"{'.' + hint if hint else ''} Expected some of: {', '.join(PROJECTIONS)}")
        if len(set(v)) < len(v):
            raise ValueError("lists a projection more than once")
        return v


def lora_targets(model: Any, projections: list[str] | tuple[str, ...] | None) -> list[str]:
    """Full module names of the decoder layers' Linears called one of ``projections`` (None: all 7), in
    model order, leaving out Linears pruned to nothing."""
    from gradprune.models.adapters import get_adapter

    wanted = set(projections or PROJECTIONS)
    layers = get_adapter(model).decoder_layers(model)
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for layer in layers:
        for sub, module in layer.named_modules():
            if sub.rsplit(".", 1)[-1] in wanted and hasattr(module, "weight") and module.weight.numel() > 0:
                out.append(names[id(module)])
    return out


class LoRARecovery(RecoveryMethod):
    """LoRA adapters (peft) on the pruned projections, trained with the base weights frozen."""

    Params = LoRAParams

    def __init__(self, params: LoRAParams | None = None) -> None:
        super().__init__(params)
        self._peft: Any = None
        self._targets: list[str] = []
        #: peft's adapter state (CPU tensors) and config, once released
        self.state: dict[str, Any] | None = None
        self.config: Any = None

    def attach(self, model: Any) -> list:
        """Wrap ``model``'s targeted projections in LoRA layers (in place); returns the adapter weights."""
        from peft import LoraConfig, get_peft_model

        p = self.params
        self._targets = lora_targets(model, p.target_modules)
        if not self._targets:
            raise RecoveryError(f"recovery.params.target_modules: no {', '.join(p.target_modules or PROJECTIONS)} "
                                f"Linear with weights is left in the pruned model: nothing to adapt")
        self.config = LoraConfig(r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout, target_modules=self._targets,
                                 bias="none", task_type="CAUSAL_LM")
        with warnings.catch_warnings():  # peft asks transformers 5 for a deprecated attribute name
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
            self._peft = get_peft_model(model, self.config)
        return [t for t in self._peft.parameters() if t.requires_grad]

    def summary(self) -> dict[str, Any]:
        """The adapted modules and the adapter's size."""
        trainable = sum(t.numel() for t in self._peft.parameters() if t.requires_grad) if self._peft else None
        return {"adapted_modules": len(self._targets), "trainable_params": trainable,
                "projections": sorted({n.rsplit(".", 1)[-1] for n in self._targets}, key=PROJECTIONS.index),
                "r": self.params.r, "alpha": self.params.alpha, "dropout": self.params.dropout}

    def release(self, model: Any) -> None:
        """Keep the adapter state (on the host) and put the untouched Linears back into ``model``."""
        if self._peft is None:
            return
        from peft import get_peft_model_state_dict

        self.state = {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(self._peft).items()}
        self._peft.unload()  # never merged: the base weights are the untuned ones, bit for bit
        self._peft = None

    def write(self, folder: Path) -> dict[str, Any]:
        """The adapter in peft's format in ``folder/adapter``; returns the manifest's recovery entry."""
        from safetensors.torch import save_file

        if self.state is None:
            raise RecoveryError("the LoRA adapter was not trained (or not released) yet: nothing to write")
        target = folder / ADAPTER_DIR
        target.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(str(target))
        save_file({k: v.contiguous() for k, v in self.state.items()}, str(target / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        return {"method": self.name or "lora", "format": "peft", "adapter": ADAPTER_DIR}
