"""Which fine-tuning checkpoints to keep and when to stop (pure; the trainer does the I/O).

Paper, section 3.2: keep the checkpoints with the best train loss, the best validation loss and those
after epochs 1, 2 and 3 (Imagic: each of the first 8 epochs); train until the validation loss stagnates
or rises, at most 40 epochs.

Stopping rule, made precise here (the paper gives no numbers): an epoch *improves* when its validation
loss is below the best earlier one by more than `min_relative_improvement` (relative). Training stops
after the epoch that completes `patience` consecutive epochs without improvement, or after `max_epochs`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class EpochLosses:
  epoch: int  # 1-based: the checkpoint written after this many epochs
  train_loss: float
  val_loss: float


def _argmin_epoch(history: Sequence[EpochLosses], key) -> int:
  # Earliest epoch wins ties, so a flat curve keeps the cheaper, earlier checkpoint.
  return min(history, key=lambda h: (key(h), h.epoch)).epoch


def checkpoints_to_keep(
  history: Sequence[EpochLosses], keep_epochs: Sequence[int], keep_best: bool = True
) -> dict[str, int]:
  """Role -> epoch of every checkpoint to keep after the epochs in `history`.

  Roles: "best_train", "best_val" (when keep_best) and "epoch_<e>" for each e in keep_epochs reached.
  Several roles may name the same epoch; every epoch not named may be deleted."""
  if not history:
    return {}
  epochs = [h.epoch for h in history]
  if epochs != list(range(1, len(history) + 1)):
    raise ValueError(f"epoch history must be consecutive from 1, got epochs {epochs}")
  keep = {f"epoch_{e}": e for e in sorted(keep_epochs) if e <= len(history)}
  if keep_best:
    keep["best_train"] = _argmin_epoch(history, lambda h: h.train_loss)
    keep["best_val"] = _argmin_epoch(history, lambda h: h.val_loss)
  return keep


def epochs_without_improvement(val_losses: Sequence[float], min_relative_improvement: float) -> int:
  """How many of the last epochs did not improve on the best validation loss before them."""
  best = float("inf")
  stale = 0
  for loss in val_losses:
    if loss < best * (1.0 - min_relative_improvement) or best == float("inf"):
      best, stale = loss, 0
    else:
      stale += 1
      best = min(best, loss)
  return stale


def should_stop(
  val_losses: Sequence[float], *, patience: int, max_epochs: int, min_relative_improvement: float = 0.0
) -> bool:
  """True when training must stop after the epochs whose validation losses are given."""
  if patience < 1 or max_epochs < 1:
    raise ValueError(f"patience and max_epochs must be >= 1, got {patience} and {max_epochs}")
  if len(val_losses) >= max_epochs:
    return True
  return epochs_without_improvement(val_losses, min_relative_improvement) >= patience
