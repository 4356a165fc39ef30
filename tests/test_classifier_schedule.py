"""Plateau / early-stop / max-epoch logic on scripted validation curves, against hand-derived epochs."""

import pytest

from jax_aug.classifier import schedule

PAPER = dict(lr_patience=10, lr_factor=0.1, stop_patience=20, max_epochs=270)


def run(curve, **overrides):
  """Feeds `curve` epoch by epoch; returns (lr used in each epoch, decisions, final state)."""
  kwargs = PAPER | overrides
  state = schedule.initial_state(0.1)
  lrs, decisions = [], []
  for epoch, accuracy in enumerate(curve):
    lrs.append(state.learning_rate)
    state, decision = schedule.update(state, epoch, accuracy, **kwargs)
    decisions.append(decision)
    if decision.stop:
      break
  return lrs, decisions, state


def test_rising_curve_never_reduces_and_stops_at_max_epochs():
  lrs, decisions, state = run([i / 1000 for i in range(300)])
  assert len(decisions) == 270
  assert set(lrs) == {0.1}
  assert all(d.improved for d in decisions)
  assert decisions[-1].stop_reason == "max_epochs" and state.best_epoch == 269


def test_flat_after_peak_divides_after_10_bad_epochs_and_stops_after_20():
  # Best at epoch 4 (0.5); epochs 5..: 0.4 forever. Bad epochs 5..14 -> divide after epoch 14;
  # bad epochs 15..24 -> 20 bad epochs since the best at epoch 24: stop (no second division).
  curve = [0.1, 0.2, 0.3, 0.4, 0.5] + [0.4] * 100
  lrs, decisions, state = run(curve)
  assert [i for i, d in enumerate(decisions) if d.lr_reduced] == [14]
  assert lrs[14] == 0.1 and lrs[15] == pytest.approx(0.01)
  assert len(decisions) == 25 and decisions[24].stop_reason == "plateau"
  assert state.best_epoch == 4 and state.best_accuracy == 0.5


def test_improvement_after_division_restarts_both_counts():
  # Best 0.5 at 0; divide after epoch 10; improvement at 15 (0.6); bad 16..25 -> divide after 25;
  # bad 26..35 -> stop at 35 (20 since best at 15).
  curve = [0.5] + [0.4] * 14 + [0.6] + [0.55] * 100
  lrs, decisions, state = run(curve)
  assert [i for i, d in enumerate(decisions) if d.lr_reduced] == [10, 25]
  assert lrs[11] == pytest.approx(0.01) and lrs[26] == pytest.approx(0.001)
  assert len(decisions) == 36 and decisions[-1].stop_reason == "plateau"
  assert [i for i, d in enumerate(decisions) if d.improved] == [0, 15]


def test_equal_accuracy_is_not_an_improvement_and_min_delta_applies():
  _, decisions, _ = run([0.5, 0.5, 0.52], min_delta=0.0)
  assert [d.improved for d in decisions] == [True, False, True]
  _, decisions, _ = run([0.5, 0.5, 0.52], min_delta=0.05)
  assert [d.improved for d in decisions] == [True, False, False]


def test_small_patiences_and_cap():
  # lr_patience 2, stop 3, max 5: best at 0; bad 1, 2 -> divide after 2; bad 3 -> stop (3 since best).
  lrs, decisions, _ = run([0.9, 0.1, 0.1, 0.1, 0.1], lr_patience=2, stop_patience=3, max_epochs=5)
  assert lrs == [0.1, 0.1, 0.1, pytest.approx(0.01)]
  assert decisions[-1].stop_reason == "plateau"


def test_state_round_trips_through_json_and_resumes_identically():
  curve = [0.5] + [0.4] * 14 + [0.6] + [0.55] * 100
  _, full, _ = run(curve)
  state = schedule.initial_state(0.1)
  for epoch in range(12):
    state, _ = schedule.update(state, epoch, curve[epoch], **PAPER)
  state = schedule.PlateauState.from_json(state.to_json())
  resumed = []
  for epoch in range(12, len(full)):
    state, decision = schedule.update(state, epoch, curve[epoch], **PAPER)
    resumed.append(decision)
  assert resumed == full[12:]
  assert schedule.PlateauState.from_json(schedule.initial_state(0.1).to_json()) == schedule.initial_state(0.1)


def test_rejects_skipped_epochs_and_updates_after_stop():
  state, _ = schedule.update(schedule.initial_state(0.1), 0, 0.5, **PAPER)
  with pytest.raises(ValueError, match="expected epoch 1, got 3"):
    schedule.update(state, 3, 0.5, **PAPER)
  _, _, stopped = run([0.5, 0.1], lr_patience=5, stop_patience=1, max_epochs=9)
  with pytest.raises(ValueError, match="already stopped"):
    schedule.update(stopped, 2, 0.9, **PAPER)
