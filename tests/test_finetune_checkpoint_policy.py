"""The checkpoint policy keeps exactly the paper's checkpoints on a scripted loss curve, and the stopping
rule stops where the documented patience says."""

import pytest

from jax_aug.finetune.checkpoint_policy import EpochLosses, checkpoints_to_keep, epochs_without_improvement, should_stop

# Train loss falls until epoch 6 then rises; validation loss is best at epoch 4.
TRAIN = [1.0, 0.8, 0.7, 0.6, 0.55, 0.5, 0.52, 0.6, 0.7, 0.8]
VAL = [1.1, 0.9, 0.85, 0.80, 0.82, 0.84, 0.9, 0.95, 1.0, 1.1]


def _history(n):
  return [EpochLosses(e + 1, TRAIN[e], VAL[e]) for e in range(n)]


def test_keeps_best_train_best_val_and_first_three_epochs():
  keep = checkpoints_to_keep(_history(10), keep_epochs=(1, 2, 3))
  assert keep == {"epoch_1": 1, "epoch_2": 2, "epoch_3": 3, "best_train": 6, "best_val": 4}
  assert set(keep.values()) == {1, 2, 3, 4, 6}


def test_keep_set_while_training_grows_and_drops():
  assert checkpoints_to_keep(_history(1), (1, 2, 3)) == {"epoch_1": 1, "best_train": 1, "best_val": 1}
  assert set(checkpoints_to_keep(_history(5), (1, 2, 3)).values()) == {1, 2, 3, 4, 5}
  # Epoch 5 was best train after 5 epochs; after 6 epochs it is no longer kept.
  assert set(checkpoints_to_keep(_history(6), (1, 2, 3)).values()) == {1, 2, 3, 4, 6}


def test_imagic_keeps_each_of_first_eight_epochs():
  keep = checkpoints_to_keep(_history(10), keep_epochs=range(1, 9))
  assert set(keep.values()) == {1, 2, 3, 4, 5, 6, 7, 8}
  assert keep["best_val"] == 4 and keep["best_train"] == 6


def test_ties_keep_the_earliest_epoch():
  history = [EpochLosses(1, 0.5, 0.5), EpochLosses(2, 0.5, 0.5)]
  assert checkpoints_to_keep(history, ()) == {"best_train": 1, "best_val": 1}


def test_history_must_be_consecutive():
  with pytest.raises(ValueError, match=r"consecutive from 1, got epochs \[1, 3\]"):
    checkpoints_to_keep([EpochLosses(1, 1, 1), EpochLosses(3, 1, 1)], (1,))


def test_stopping_rule():
  # Best val at epoch 4; epochs 5 and 6 do not improve -> with patience 2 stop after epoch 6.
  assert [should_stop(VAL[:n], patience=2, max_epochs=40) for n in range(1, 8)] == [
    False,
    False,
    False,
    False,
    False,
    True,
    True,
  ]
  assert epochs_without_improvement(VAL[:6], 0.0) == 2
  # A rise right after the best stops at once with patience 1.
  assert should_stop(VAL[:5], patience=1, max_epochs=40)
  # A steadily decreasing curve runs to the epoch cap.
  falling = [1.0 / (e + 1) for e in range(40)]
  assert not should_stop(falling[:39], patience=2, max_epochs=40)
  assert should_stop(falling, patience=2, max_epochs=40)
  # Stagnation: improvements smaller than the relative threshold count as no improvement.
  flat = [1.0, 0.9995, 0.9991]
  assert should_stop(flat, patience=2, max_epochs=40, min_relative_improvement=1e-3)
  assert not should_stop(flat, patience=2, max_epochs=40, min_relative_improvement=0.0)
  with pytest.raises(ValueError, match="patience"):
    should_stop([1.0], patience=0, max_epochs=40)
