"""Statistics of Table 1 and Figure 6 against hand-computed values."""

import math

import pytest

from jax_aug.study import statistics


def test_mean_and_standard_error_by_hand():
  # values 1, 2, 3, 4, 5: mean 3, sample variance 10/4 = 2.5, SE = sqrt(2.5)/sqrt(5) = sqrt(0.5).
  mean, se = statistics.mean_and_standard_error([1, 2, 3, 4, 5])
  assert mean == 3.0
  assert se == pytest.approx(math.sqrt(0.5), rel=1e-12)
  # Two values 60.0, 61.0: s = sqrt(0.5), SE = sqrt(0.5)/sqrt(2) = 0.5.
  assert statistics.mean_and_standard_error([60.0, 61.0]) == pytest.approx((60.5, 0.5))
  # Equal values: no spread.
  assert statistics.mean_and_standard_error([57.2] * 5) == pytest.approx((57.2, 0.0))


def test_standard_error_uses_ddof_1_not_0():
  _, se = statistics.mean_and_standard_error([0.0, 2.0])
  assert se == pytest.approx(1.0)  # ddof=0 would give 1/sqrt(2)


def test_single_value_has_undefined_standard_error_and_empty_is_refused():
  mean, se = statistics.mean_and_standard_error([61.0])
  assert mean == 61.0 and math.isnan(se)
  with pytest.raises(ValueError, match="at least one value"):
    statistics.mean_and_standard_error([])
  with pytest.raises(ValueError, match="non-finite"):
    statistics.mean_and_standard_error([1.0, float("nan")])


def test_per_class_mean_and_improvement_by_hand():
  runs = [{"n01": 50.0, "n02": 100.0}, {"n01": 70.0, "n02": 90.0}]
  assert statistics.mean_per_class(runs) == {"n01": 60.0, "n02": 95.0}
  improvement = statistics.per_class_improvement({"n01": 60.0, "n02": 95.0}, {"n01": 65.0, "n02": 80.0})
  assert improvement == {"n01": -5.0, "n02": 15.0}


def test_mismatched_classes_are_named():
  with pytest.raises(ValueError, match=r"only in run 0 \['n02'\]"):
    statistics.mean_per_class([{"n01": 1.0, "n02": 1.0}, {"n01": 1.0}])
  with pytest.raises(ValueError, match=r"only in the baseline \['n03'\]"):
    statistics.per_class_improvement({"n01": 1.0}, {"n01": 1.0, "n03": 2.0})
