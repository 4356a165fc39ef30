"""Orbax checkpoints of a fine-tuning run: two `CheckpointManager`s in the run's workdir.

  resume/<step>/state/         trainable + optimizer state after train step <step> (the trainer's TrainState)
  resume/<step>/progress/      the trainer's progress record (JSON): epoch, losses so far, history, kept, stopped
  checkpoints/epoch_<e>/trainable/   the trainable tree after epoch e, for every epoch the policy keeps

`resume` keeps one step, the latest; the run's final one holds only the progress (a finished run needs no
optimizer state), so it stays the record of what the run did: `read_progress` (epochs run, loss history,
kept roles). `checkpoints` keeps every step it is given; the checkpoint policy (checkpoint_policy.py) decides
and `keep_only` deletes the rest. Orbax writes into a temporary directory and renames it when complete, so a
killed run leaves the previous checkpoint or the new one, never a torn one (leftover temporaries are removed
when the managers open). Every process calls these (orbax coordinates the writes).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

RESUME_DIR = "resume"
KEPT_DIR = "checkpoints"
EPOCH_PREFIX = "epoch"  # kept checkpoints are checkpoints/epoch_<e>: the name the study's selection uses
STATE, PROGRESS, TRAINABLE = "state", "progress", "trainable"


def _manager(directory: Path, handlers: dict, **options) -> ocp.CheckpointManager:
  # Synchronous saves: the train step donates the state's buffers, so a background save must not read them.
  return ocp.CheckpointManager(
    directory.absolute(),
    item_handlers=handlers,
    options=ocp.CheckpointManagerOptions(
      enable_async_checkpointing=False, create=True, cleanup_tmp_directories=True, save_root_metadata=False, **options
    ),
  )


def _resume_manager(workdir: Path) -> ocp.CheckpointManager:
  return _manager(
    workdir / RESUME_DIR, {STATE: ocp.StandardCheckpointHandler(), PROGRESS: ocp.JsonCheckpointHandler()}, max_to_keep=1
  )


def _latest_progress(manager: ocp.CheckpointManager) -> dict | None:
  step = manager.latest_step()
  if step is None:
    return None
  return manager.restore(step, args=ocp.args.Composite(**{PROGRESS: ocp.args.JsonRestore()}))[PROGRESS]


def _save(manager: ocp.CheckpointManager, step: int, **items) -> None:
  if not manager.save(step, args=ocp.args.Composite(**items)):
    raise RuntimeError(f"orbax did not save step {step} in {manager.directory} (steps there: {manager.all_steps()})")


class RunCheckpoints:
  """The resume state and the kept epochs of one fine-tuning workdir."""

  def __init__(self, workdir: str | os.PathLike):
    workdir = Path(workdir)
    self.resume = _resume_manager(workdir)
    self.kept = _manager(workdir / KEPT_DIR, {TRAINABLE: ocp.StandardCheckpointHandler()}, step_prefix=EPOCH_PREFIX)

  def progress(self) -> dict | None:
    """The latest progress record, None before the first save."""
    return _latest_progress(self.resume)

  def restore_state(self, template: Any) -> Any | None:
    """The latest saved state laid out as `template`; None when there is none (a finished run's last step)."""
    step = self.resume.latest_step()
    if step is None or self.resume.item_metadata(step).get(STATE) is None:
      return None
    return self.resume.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(template)}))[STATE]

  def save_resume(self, step: int, state: Any | None, progress: dict) -> None:
    """The resume point after train step `step`; `state` None saves the progress alone (the run ended)."""
    items = {PROGRESS: ocp.args.JsonSave(progress)}
    if state is not None:
      items[STATE] = ocp.args.StandardSave(state)
    _save(self.resume, step, **items)

  def save_epoch(self, epoch: int, trainable: Any) -> None:
    _save(self.kept, epoch, **{TRAINABLE: ocp.args.StandardSave(trainable)})

  def keep_only(self, epochs: Collection[int]) -> None:
    """Deletes every kept-epoch checkpoint not in `epochs`."""
    for epoch in self.kept.all_steps():
      if epoch not in epochs:
        self.kept.delete(epoch)

  def close(self) -> None:
    self.resume.close()
    self.kept.close()


def epoch_dir(workdir: str | os.PathLike, epoch: int) -> Path:
  return Path(workdir) / KEPT_DIR / f"{EPOCH_PREFIX}_{epoch}"


def read_progress(workdir: str | os.PathLike) -> dict | None:
  """The progress record of the fine-tuning run in `workdir` (None when it has not saved one): "step",
  "epoch", "history" [{"epoch", "train_loss", "val_loss"}], "kept" {role: epoch}, "stopped", ..."""
  if not (Path(workdir) / RESUME_DIR).is_dir():
    return None
  manager = _resume_manager(Path(workdir))
  try:
    return _latest_progress(manager)
  finally:
    manager.close()


def kept_checkpoints(workdir: str | os.PathLike) -> dict[str, Path]:
  """Role ("best_train", "best_val", "epoch_<e>") -> checkpoint directory of a fine-tuning run."""
  progress = read_progress(workdir)
  if progress is None:
    return {}
  return {role: epoch_dir(workdir, epoch) for role, epoch in progress["kept"].items()}


def restore_trainable(checkpoint_dir: str | os.PathLike) -> Any:
  """The trainable tree of a kept checkpoint (checkpoints/epoch_<e>), on this process's first device (as the
  base model is) whatever devices saved it: a run trained on N devices samples on any machine."""
  path = Path(checkpoint_dir).absolute() / TRAINABLE
  handler = ocp.StandardCheckpointHandler()
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(
    lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), handler.metadata(path).tree
  )
  checkpointer = ocp.Checkpointer(handler)
  return checkpointer.restore(path, args=ocp.args.StandardRestore(target))
