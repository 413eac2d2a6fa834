"""The time and memory planner behind ``xlqa estimate``: exact counts and predictions from measured steps.

* :mod:`xlqa.plan.counts`: what training and evaluation will do, counted exactly with the code that does it
  (windows from the same feature building, batches in the same order, steps as the loop counts them).
* :mod:`xlqa.plan.measure`: a few real training steps and evaluation batches on this hardware, peak memory;
  and predictions from them over the exact batches.
* :mod:`xlqa.plan.writes`: a checkpoint, the best model and the guard's snapshot, written once by the training
  loop's own functions.
* :mod:`xlqa.plan.estimate`: candidates (models x precisions x batch sizes, or a list of configs) and one
  :class:`~xlqa.plan.estimate.Estimate` each.
"""
