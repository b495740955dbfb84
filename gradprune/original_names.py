"""The original tool's names for recipe keys, in one table.

The tool gradprune follows named its command-line flags and its ``search_results.csv`` columns its own
way (``taylor_seq_len`` for ``calibration.seq_len``). Users' scripts rely on them, so they stay at the
edges; inside, the recipe keys are used. :data:`ORIGINAL_NAMES` is the one place they are listed:

* the recipe's error messages turn a top-level ``taylor_seq_len:`` into the dotted key to write;
* ``gradprune run|search|validate`` accept each name as a flag (``--taylor_seq_len 32``);
* run.json's metrics and the search CSV record the calibration settings under the names marked
  ``recorded`` (the CSV's column order, the prediction's column roles and the report's hypotheses
  read them from here).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OriginalName:
    """One of the original tool's names and the recipe key it stands for."""

    name: str
    key: str
    #: run.json's metrics and search_results.csv carry the setting under ``name``
    recorded: bool = False


ORIGINAL_NAMES: tuple[OriginalName, ...] = (
    # its CSV column pruning_ratio is the ratio achieved, a metric: not recorded here as a setting
    OriginalName("pruning_ratio", "pruning.ratio"),
    OriginalName("taylor_seq_len", "calibration.seq_len", recorded=True),
    OriginalName("taylor_num_samples", "calibration.num_samples", recorded=True),
    OriginalName("base_model", "model.name_or_path"),
    OriginalName("run_evaluation", "eval.run"),
    OriginalName("output_name", "output.dir"),
)

#: every name → its recipe key (the flags ``gradprune run`` accepts; the recipe's hints)
ORIGINAL_KEYS: dict[str, str] = {o.name: o.key for o in ORIGINAL_NAMES}
#: the settings run.json's metrics and search_results.csv record under the original name → recipe key
ORIGINAL_SETTINGS: dict[str, str] = {o.name: o.key for o in ORIGINAL_NAMES if o.recorded}


def setting_columns(key: str) -> tuple[str, ...]:
    """The columns a search CSV may hold recipe key ``key`` in: its original name when it is recorded under
    one (``taylor_seq_len``), then the dotted key (a swept key's own column)."""
    return (*(o.name for o in ORIGINAL_NAMES if o.recorded and o.key == key), key)
