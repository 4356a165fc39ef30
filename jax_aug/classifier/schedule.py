"""The paper's learning-rate plateau, early stopping and epoch cap, as a pure function of the curve.

Burg et al. (2023): "learning rate 0.1 which we divided by 10 when validation accuracy failed to improve
for 10 epochs. We stopped training when the validation accuracy did not improve for 20 epochs or after at
most 270 epochs and used the highest validation accuracy checkpoint". Our reading, where the text is
silent:
- "improve" means strictly above the best so far by more than `min_delta` (0 by default);
- the lr is divided when `lr_patience` consecutive epochs have not improved since the best epoch or since
  the last division, whichever is later (the counter restarts after a division, as in PyTorch's
  ReduceLROnPlateau; unlike it, the division happens after exactly `lr_patience` bad epochs, not one
  more, following the paper's wording);
- training stops after `stop_patience` epochs without improvement since the best epoch (a division does
  not restart this count), or when `max_epochs` epochs are done.
The state is a small JSON-serialisable dataclass so it goes into every checkpoint and a resumed run
continues the same schedule.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PlateauState:
  learning_rate: float
  best_accuracy: float = float("-inf")
  best_epoch: int = -1
  epochs_since_best: int = 0
  epochs_since_change: int = 0  # since the best epoch or the last lr division, whichever is later
  last_epoch: int = -1
  stop: bool = False

  def to_json(self) -> dict:
    return dataclasses.asdict(self) | {"best_accuracy": None if self.best_accuracy == float("-inf") else self.best_accuracy}

  @classmethod
  def from_json(cls, data: dict) -> PlateauState:
    data = dict(data)
    if data.get("best_accuracy") is None:
      data["best_accuracy"] = float("-inf")
    return cls(**data)


@dataclasses.dataclass(frozen=True)
class EpochDecision:
  improved: bool  # this epoch is the new best: save the best checkpoint
  learning_rate: float  # lr for the next epoch
  lr_reduced: bool
  stop: bool
  stop_reason: str | None  # "plateau" or "max_epochs"


def initial_state(learning_rate: float) -> PlateauState:
  return PlateauState(learning_rate=learning_rate)


def update(
  state: PlateauState,
  epoch: int,
  val_accuracy: float,
  *,
  lr_patience: int,
  lr_factor: float,
  stop_patience: int,
  max_epochs: int,
  min_delta: float = 0.0,
) -> tuple[PlateauState, EpochDecision]:
  """Advances the schedule by the validation accuracy of `epoch` (0-based, consecutive)."""
  if state.stop:
    raise ValueError(f"the schedule already stopped after epoch {state.last_epoch}; got epoch {epoch}")
  if epoch != state.last_epoch + 1:
    raise ValueError(f"epochs must be consecutive: expected epoch {state.last_epoch + 1}, got {epoch}")
  improved = val_accuracy > state.best_accuracy + min_delta
  if improved:
    best_accuracy, best_epoch, since_best, since_change = val_accuracy, epoch, 0, 0
  else:
    best_accuracy, best_epoch = state.best_accuracy, state.best_epoch
    since_best, since_change = state.epochs_since_best + 1, state.epochs_since_change + 1
  learning_rate, lr_reduced = state.learning_rate, False
  stop_reason = None
  if since_best >= stop_patience:
    stop_reason = "plateau"
  elif epoch + 1 >= max_epochs:
    stop_reason = "max_epochs"
  elif since_change >= lr_patience:
    learning_rate, lr_reduced, since_change = state.learning_rate * lr_factor, True, 0
  new_state = PlateauState(
    learning_rate=learning_rate,
    best_accuracy=best_accuracy,
    best_epoch=best_epoch,
    epochs_since_best=since_best,
    epochs_since_change=since_change,
    last_epoch=epoch,
    stop=stop_reason is not None,
  )
  return new_state, EpochDecision(
    improved=improved, learning_rate=learning_rate, lr_reduced=lr_reduced, stop=new_state.stop, stop_reason=stop_reason
  )
