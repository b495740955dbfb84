"""Errors a user can cause. The CLI prints them without a traceback and exits 2."""

from __future__ import annotations


class GradpruneError(Exception):
    """A problem with the user's input: the message names the file/key and what is expected."""


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
