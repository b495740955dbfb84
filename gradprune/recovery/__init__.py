"""Recovery after pruning: train the pruned model briefly (LoRA through peft, with Lightning), evaluate it again.

``recovery_stage`` (:mod:`gradprune.recovery.stage`) is the run's stage; methods are plugins of the
``recovery`` family (:mod:`gradprune.recovery.method`, :mod:`gradprune.recovery.lora`); the examples are made
in :mod:`gradprune.recovery.training_data` and trained in :mod:`gradprune.recovery.module`. Nothing heavy is
imported here.
"""
