"""Pure statistics of the study: mean ± standard error over resamples, per-class accuracy and improvement.

No I/O. The standard error is that of the mean over the n resampled augmentation sets (one classifier
each): SE = s / sqrt(n) with s the sample standard deviation (ddof=1), as in the paper's Table 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def mean_and_standard_error(values: Sequence[float]) -> tuple[float, float]:
  """(mean, std(ddof=1) / sqrt(n)); the standard error is NaN for a single value (undefined)."""
  values = [float(v) for v in values]
  if not values:
    raise ValueError("mean_and_standard_error needs at least one value, got none")
  if any(not math.isfinite(v) for v in values):
    raise ValueError(f"mean_and_standard_error got a non-finite value: {values}")
  n = len(values)
  mean = sum(values) / n
  if n == 1:
    return mean, math.nan
  variance = sum((v - mean) ** 2 for v in values) / (n - 1)
  return mean, math.sqrt(variance) / math.sqrt(n)


def mean_per_class(runs_per_class: Sequence[Mapping[str, float]]) -> dict[str, float]:
  """Per-class accuracy averaged over runs; every run must score the same classes."""
  if not runs_per_class:
    raise ValueError("mean_per_class needs at least one run, got none")
  classes = set(runs_per_class[0])
  for index, run in enumerate(runs_per_class[1:], start=1):
    if set(run) != classes:
      raise ValueError(
        f"run {index} scores different classes than run 0: only in run 0 {sorted(classes - set(run))},"
        f" only in run {index} {sorted(set(run) - classes)}"
      )
  return {c: sum(float(run[c]) for run in runs_per_class) / len(runs_per_class) for c in sorted(classes)}


def per_class_improvement(method: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
  """method[c] - baseline[c] for every class (accuracy points); both must score the same classes."""
  if set(method) != set(baseline):
    raise ValueError(
      f"per-class improvement needs the same classes in method and baseline: only in the method"
      f" {sorted(set(method) - set(baseline))}, only in the baseline {sorted(set(baseline) - set(method))}"
    )
  return {c: float(method[c]) - float(baseline[c]) for c in sorted(method)}
