"""Memory: planned before any weight loads, measured per stage, released when a stage ends.

* ``shape.py``: the sizes of a model, from its config (built on the meta device);
* ``workload.py``: what a recipe asks of the memory (dtypes, micro-batch, buffers, evaluation batches);
* ``plan.py``: each stage's device peak, line by line (``plan_memory``);
* ``capacity.py``: the device's free memory; ``fit.py``: ``calibration.batch_size: auto``, the
  mean-gradient buffer's place, the refusal with the numbers and the knobs;
* ``peaks.py``: each stage's measured peak; ``watch.py``: the plan and the peaks of one run;
* ``release.py``: breaking the reference cycles that would keep a stage's memory alive;
* ``table.py``: the plan for published models, for the docs and ``gradprune plan-memory``.
"""
