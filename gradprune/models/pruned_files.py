"""The name of the manifest that marks a pruned checkpoint directory.

``cut/checkpoint.py`` writes and reads pruned checkpoints; loading a model (this, an earlier stage) has to
recognise one to refuse it with a useful message, so the name lives here and the cut stage imports it.
"""

MANIFEST = "gradprune_checkpoint.json"
