"""Analysis of search results: correlations, replicates, predictors, figures, report, predict.

``gradprune analyze`` runs :func:`gradprune.analysis.command.analyze_command`; ``gradprune predict``
runs :func:`gradprune.analysis.command.predict_command`. Heavy libraries (scipy, scikit-learn,
matplotlib) are imported inside the functions that need them.
"""
