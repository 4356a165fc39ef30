"""The learning-rate grid search of the fine-tuned methods (pure; the study runner runs the grid's runs).

Paper, Sec. 3.2: "Scaling to larger batch sizes was implemented by square-root scaling the learning rate to
ensure constant gradient variance, and we performed a fine-grained grid-search for the optimal learning
rate." The paper gives neither the grid nor the criterion. Ours: every grid point multiplies the base
learning rate of every trainable group of the method by one factor (`finetune.lr_search.factors`), each
point is a full fine-tuning run, and the winner is the run with the lowest validation loss of any of its
epochs: the validation loss is the signal the paper trains by ("until the validation loss stagnated or
increased"). The checkpoint selection of Sec. 3.2 (downstream validation accuracy) then runs on the winner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jax_aug.finetune.checkpoint_policy import EpochLosses

GROUPS = ("conditioning", "pseudo_words", "unet")


def run_config(finetune_config, factor: float):
  """A resolved copy of a method's fine-tuning block for one grid point: every group's base learning rate
  (and the batch-scaled rate the trainer reads) times `factor`, without the grid itself (so a run's
  fingerprint covers what it trains with, not which other points the grid has)."""
  if not factor > 0:
    raise ValueError(f"learning-rate grid factors must be > 0, got {factor}")
  config = finetune_config.copy_and_resolve_references()
  for group in GROUPS:
    config.base_learning_rate[group] = config.base_learning_rate[group] * factor
    config.learning_rate[group] = config.learning_rate[group] * factor
  with config.unlocked():  # run_study.py's configs come locked from config_flags
    del config["lr_search"]
  return config


def best_validation_loss(history: Sequence[EpochLosses]) -> float:
  if not history:
    raise ValueError("a fine-tuning run without a finished epoch has no validation loss")
  return min(h.val_loss for h in history)


def choose(runs: Mapping[str, Sequence[EpochLosses]]) -> str:
  """The run with the lowest validation loss over its epochs; ties go to the run listed first."""
  if not runs:
    raise ValueError("learning-rate grid search: no run to choose from")
  names = list(runs)
  return min(names, key=lambda name: (best_validation_loss(runs[name]), names.index(name)))
