"""Orbax checkpoints of a classifier run: `latest` (everything needed to resume) and `best` (the
weights with the highest validation top-1 so far, scored on the test split at the end).

Both directories keep one step, the step number being the epoch (0-based) the checkpoint closes. Orbax
writes into a temporary directory and renames it when complete, so a killed run leaves either the
previous checkpoint or the new one, never a torn one. Every host calls these functions (orbax
coordinates the writes); arrays are restored straight onto the mesh with the shardings of `template`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


def _manager(directory: Path) -> ocp.CheckpointManager:
  # Synchronous saves: the next epoch's state is donated into the train step, so the buffers being
  # written must not be reused while a background save still reads them.
  options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True)
  return ocp.CheckpointManager(directory.absolute(), options=options)


class RunCheckpoints:
  """The two checkpoint slots of one run directory."""

  def __init__(self, workdir: str | os.PathLike):
    root = Path(workdir) / "checkpoints"
    self.latest = _manager(root / "latest")
    self.best = _manager(root / "best")

  def latest_epoch(self) -> int | None:
    return self.latest.latest_step()

  def best_epoch(self) -> int | None:
    return self.best.latest_step()

  def save_latest(self, epoch: int, state: Any, meta: dict) -> None:
    self.latest.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    self.latest.wait_until_finished()

  def restore_latest(self, template: Any) -> tuple[int, Any, dict]:
    epoch = self.latest.latest_step()
    if epoch is None:
      raise FileNotFoundError(f"no latest checkpoint in {self.latest.directory}")
    restored = self.latest.restore(
      epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(template)), meta=ocp.args.JsonRestore())
    )
    return epoch, restored.state, restored.meta

  def save_best(self, epoch: int, variables: Any, meta: dict) -> None:
    if self.best.latest_step() == epoch:
      return  # written before a crash; the resumed rerun of this epoch computed the same weights
    self.best.save(epoch, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables), meta=ocp.args.JsonSave(meta)))
    self.best.wait_until_finished()

  def restore_best(self, template: Any) -> tuple[int, Any, dict]:
    epoch = self.best.latest_step()
    if epoch is None:
      raise FileNotFoundError(f"no best checkpoint in {self.best.directory}")
    restored = self.best.restore(
      epoch, args=ocp.args.Composite(variables=ocp.args.StandardRestore(_abstract(template)), meta=ocp.args.JsonRestore())
    )
    return epoch, restored.variables, restored.meta

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def _abstract(template: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), template)
