"""Errors a user can cause. The CLI prints them without a traceback and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GradpruneError(Exception):
    """A problem with the user's input: the message names the file/key and what is expected.

    Raised with several problems (``RecipeError(p1, p2)``), it stands for all of them: ``str`` joins
    them with "; " and the CLI prints each on its own ``error:`` line.
    """

    #: the exit code of the CLI (2: bad input)
    exit_code = 2

    def __str__(self) -> str:
        return "; ".join(str(a) for a in self.args)

    def lines(self) -> list[str]:
        """The problems, one per line."""
        return [str(a) for a in self.args] or [""]


class OutputError(GradpruneError):
    """Results that could not be written (a full disk, no permission to write): nothing was replaced.
    The input was fine, so the CLI exits with 1, not 2."""

    exit_code = 1


class GradpruneWarning(UserWarning):
    """Input gradprune accepted but changed or suspects (the CLI prints it as one ``warning:`` line)."""


class RecipeError(GradpruneError):
    """A recipe file, key or override is invalid."""


class PluginError(GradpruneError):
    """An unknown plugin name, or params that do not fit the plugin."""


class ModelError(GradpruneError):
    """A model path, architecture or saved checkpoint cannot be used."""


class DataError(GradpruneError):
    """A data source cannot provide what the recipe asks for."""


class CalibrationError(GradpruneError):
    """Calibration produced unusable numbers (NaN/Inf gradients or scores)."""


class PlanError(GradpruneError):
    """A pruning plan cannot be made or does not match the model."""


class EvalError(GradpruneError):
    """An evaluation task or data set failed (a search turns this into a failed row)."""


class RecoveryError(GradpruneError):
    """Recovery training cannot run as the recipe asks (nothing to adapt, a loss that is not finite)."""


class DeviceMemoryError(GradpruneError):
    """A stage ran out of device (or host) memory, or the memory plan says it would: the message names the
    stage, the estimate and the setting to change, and starts with ``oom:`` (a search's error column)."""

    def __str__(self) -> str:
        return "oom: " + super().__str__()


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` Did you mean 'a', 'b'?`` for up to three close matches of ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(options), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
