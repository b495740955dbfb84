"""The prediction model of search results: which columns are features (column roles), the registered
predictors (registry ``predictors``), their cross-validated comparison, and the exported model.

Shared by the search (predictor screening fits it on the trials evaluated so far) and by
``gradprune analyze`` / ``gradprune predict``, so it sits before both; it reads plain tables only.
Heavy libraries (scipy, scikit-learn) are imported inside the functions that need them.
"""
