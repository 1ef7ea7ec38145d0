"""Planted tickets (Fischer & Burkholz, ICLR 2022): a known winning ticket hidden in a random network,
and the benchmark that scores pruning methods by how much of it they find.

``plant(task, depth=5, width=100, seed=0)`` (SPEC §6) builds the mother network of ``circle``,
``relu`` or ``helix`` (:mod:`sketchprune.planted.tickets`); :func:`benchmark` prunes it with
registered methods and records recall, precision and the metric before and after training
(:mod:`sketchprune.planted.benchmark`).
"""

from sketchprune.planted.tickets import TASKS, Planted, evaluate, higher_is_better, make_data, metric_name, plant

__all__ = ["TASKS", "Planted", "evaluate", "higher_is_better", "make_data", "metric_name", "plant"]
