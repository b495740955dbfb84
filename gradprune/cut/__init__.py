"""The cut stage: apply a plan to a model in place (surgery) and save/reload the pruned model (checkpoint)."""
