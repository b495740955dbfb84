"""Parameter search over recipe keys: Optuna study, resumable workers, one CSV row per trial."""
