"""gradprune: gradient-based structured pruning of LLMs."""
