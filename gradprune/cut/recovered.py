"""A pruned checkpoint's recovery: the peft adapter beside the untuned weights, and the merged model.

A run with a ``recovery`` section saves, in its pruned checkpoint folder (``model/``):

* the untuned pruned weights, as without recovery;
* ``adapter/``: what recovery learned, in peft's format (``adapter_config.json`` +
  ``adapter_model.safetensors``; ``peft.PeftModel.from_pretrained(model, "model/adapter")`` reads it);
* on request (``recovery.save_merged``), ``merged/``: a whole pruned checkpoint of the adapter merged into
  the weights, which loads without peft.

The manifest's ``recovery`` entry says which are there. :func:`apply_recovery` is what ``load_pruned`` does
with them; the loaded model's ``gradprune_recovery`` attribute says which model it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradprune.errors import ModelError

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
#: the manifest key of a checkpoint's recovery entry
RECOVERY_KEY = "recovery"
#: the attribute of a loaded model that says whether it is the untuned or the recovered one
STATE_ATTR = "gradprune_recovery"


def merged_checkpoint(path: Path, manifest: dict[str, Any]) -> Path | None:
    """The merged checkpoint saved beside the adapter, if the manifest names one and it is there (deleted to
    save space, the adapter is merged on load instead)."""
    entry = manifest.get(RECOVERY_KEY)
    name = entry.get("merged") if isinstance(entry, dict) else None
    folder = path / name if isinstance(name, str) else None
    return folder if folder is not None and folder.is_dir() else None


def apply_recovery(model: Any, path: Path, manifest: dict[str, Any], recovered: bool, merge: bool) -> Any:
    """``model`` (the untuned weights of the checkpoint at ``path``) as asked: the recovered model when the
    checkpoint has an adapter and ``recovered`` (merged into the weights, or a ``peft.PeftModel`` when not
    ``merge``), else unchanged. Either way its ``gradprune_recovery`` attribute says which it is."""
    entry = manifest.get(RECOVERY_KEY)
    if not isinstance(entry, dict):
        setattr(model, STATE_ATTR, {"state": "untuned"})
        return model
    method = entry.get("method", "?")
    if entry.get("merged_into_weights"):  # this checkpoint is itself the merged model
        setattr(model, STATE_ATTR, {"state": "recovered", "method": method, "form": "merged checkpoint",
                                    "path": str(path)})
        return model
    adapter = path / str(entry.get("adapter", ADAPTER_DIR))
    if not recovered:
        setattr(model, STATE_ATTR, {"state": "untuned", "available": f"{method} adapter in {adapter}"})
        return model
    if entry.get("format") != "peft" or not (adapter / "adapter_config.json").is_file():
        raise ModelError(f"{str(path)!r}: the manifest names a {method} recovery in {adapter.name}/ that is not a "
                         f"peft adapter folder (adapter_config.json missing); load with recovered=False for the "
                         f"untuned model")
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():  # peft asks transformers 5 for a deprecated attribute name
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
        peft_model = PeftModel.from_pretrained(model, adapter)
    peft_model.eval()
    out = peft_model.merge_and_unload() if merge else peft_model
    form = "adapter merged on load" if merge else "peft model (adapter not merged)"
    setattr(out, STATE_ATTR, {"state": "recovered", "method": method, "form": form, "path": str(adapter)})
    return out
