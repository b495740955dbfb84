"""Experiment tracking through Lightning's loggers: the recipe's ``logger`` section (MLflow, TensorBoard,
Weights & Biases, CSV) receives what a run, a search's trials and an analysis wrote.

:mod:`gradprune.tracking.trackers` holds the plugins (the ``loggers`` registry family), and
:mod:`gradprune.tracking.records` what is sent when. Off unless a recipe names a logger.
"""

from gradprune.tracking.records import attach_analysis, log_run, log_trial, start_search

__all__ = ["attach_analysis", "log_run", "log_trial", "start_search"]
