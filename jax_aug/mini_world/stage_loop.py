"""The resumable training loop every mini-world stage shares.

A stage is (initial state, jitted step, batch of step s). Batches and per-step keys are pure functions of
(seed, stage, step), so a stage killed and resumed from its last checkpoint continues exactly as an
unbroken run. Writes under `<out>/<stage>/`: `metrics.jsonl` (step, mean loss since the last line, wall time summed
over resumed runs, evaluations; a resumed run first drops the rows a killed run wrote after its checkpoint),
`checkpoint.msgpack` (atomic, every `checkpoint_every` steps and at the end, with the stage's recipe) and
`done.json`. A run whose recipe (its config block less the log / eval / checkpoint intervals) differs from the
checkpoint's is refused: its schedule and batches would differ from the steps already taken. A stage whose
loss or state turns non-finite stops with FloatingPointError at the next log line or checkpoint, keeping its
last finite checkpoint (a diverged run would otherwise train on NaN to the end).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization
from tqdm import tqdm

from jax_aug.io import JsonlManifest, atomic_write_bytes, atomic_write_json
from jax_aug.metrics import drop_rows_from

CHECKPOINT = "checkpoint.msgpack"
DONE = "done.json"
# Config fields that change what is logged or saved when, never the training itself.
SCHEDULING_FIELDS = ("log_every", "eval_every", "checkpoint_every", "cache")


@dataclasses.dataclass
class Stage:
  name: str
  steps: int
  init: Callable[[], Any]  # -> state pytree {"params", "opt_state"}
  step: Callable[[Any, dict, jax.Array], tuple[Any, dict]]  # (state, batch, key) -> (state, metrics)
  batch: Callable[[int], dict]  # step -> numpy batch
  evaluate: Callable[[Any], dict] | None = None
  log_every: int = 25
  eval_every: int = 500
  checkpoint_every: int = 200
  recipe: dict = dataclasses.field(default_factory=dict)  # what a resumed run must share with the checkpoint

  @classmethod
  def configured(cls, name: str, config: Any, **functions) -> Stage:
    """A stage whose step count, log / eval / checkpoint intervals and recipe come from its config block."""
    return cls(
      name=name,
      steps=config.steps,
      eval_every=config.eval_every,
      log_every=config.log_every,
      checkpoint_every=config.checkpoint_every,
      recipe={k: _plain(v) for k, v in config.items() if k not in SCHEDULING_FIELDS},
      **functions,
    )


def _plain(value: Any) -> Any:
  """A config value as JSON has it (ConfigDicts as dicts, tuples as lists), for comparing recipes."""
  return json.loads(json.dumps(value.to_dict() if hasattr(value, "to_dict") else value))


def _check_recipe(stage: Stage, saved: dict, folder: Path) -> None:
  if "recipe" not in saved:  # checkpoints written before recipes were recorded
    return
  recorded = json.loads(saved["recipe"])
  differing = sorted(k for k in set(recorded) | set(stage.recipe) if recorded.get(k) != stage.recipe.get(k))
  if differing:
    changes = ", ".join(f"{k}: {recorded.get(k)!r} -> {stage.recipe.get(k)!r}" for k in differing)
    raise ValueError(
      f"mini-world stage {stage.name!r}: {folder / CHECKPOINT} was trained with another recipe ({changes}); resume"
      " with the checkpoint's values, or train into another --out (only the log, eval and checkpoint intervals may"
      " change between runs)"
    )


def stage_dir(out: str | Path, name: str) -> Path:
  return Path(out) / name


def run_stage(stage: Stage, out: str | Path, key: jax.Array) -> Any:
  """Runs (or resumes, or just loads a finished) `stage`; returns its final state."""
  folder = stage_dir(out, stage.name)
  folder.mkdir(parents=True, exist_ok=True)
  state = stage.init()
  start, elapsed = 0, 0.0
  if (folder / CHECKPOINT).exists():
    saved = serialization.msgpack_restore((folder / CHECKPOINT).read_bytes())
    start, elapsed = int(saved["step"]), float(saved["wall_s"])
    _check_recipe(stage, saved, folder)
    state = serialization.from_state_dict(state, saved["state"])
    print(f"{stage.name}: resumed at step {start}/{stage.steps}")
  if (folder / DONE).exists() and start >= stage.steps:
    return state
  metrics_log = JsonlManifest(folder / "metrics.jsonl")
  if metrics_log.path.exists():
    drop_rows_from(metrics_log.path, start + 1)  # rows a killed run logged after its last checkpoint
  wall = time.perf_counter() - elapsed  # wall time accumulates over resumed runs
  losses = []
  saved_step = start

  def diverged(what: str) -> FloatingPointError:
    kept = f"the checkpoint of step {saved_step} is kept" if saved_step else "no checkpoint was written"
    return FloatingPointError(f"mini-world stage {stage.name!r}: {what}; stopped ({kept}, nothing non-finite is saved)")

  def checkpoint(step):
    nonlocal saved_step
    host_state = jax.device_get(state)
    bad = [
      jax.tree_util.keystr(path)
      for path, leaf in jax.tree_util.tree_leaves_with_path(host_state)
      if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.all(np.isfinite(leaf))
    ]
    if bad:
      raise diverged(f"the state after step {step} holds non-finite values in {len(bad)} arrays, first {bad[:3]}")
    atomic_write_bytes(
      folder / CHECKPOINT,
      serialization.msgpack_serialize(
        {
          "step": step,
          "wall_s": time.perf_counter() - wall,
          "recipe": json.dumps(stage.recipe, sort_keys=True),
          "state": serialization.to_state_dict(host_state),
        }
      ),
    )
    saved_step = step

  for step in tqdm(range(start, stage.steps), desc=stage.name, initial=start, total=stage.steps, mininterval=10):
    state, metrics = stage.step(state, stage.batch(step), jax.random.fold_in(key, step))
    losses.append(metrics["loss"])  # kept on the device: reading it every step would stall the dispatch
    done = step + 1
    if done % stage.log_every == 0 or done == stage.steps:
      record = {
        "step": done,
        # the float64 mean of the float32 losses, as float() of each one gives
        "loss": float(np.mean(np.asarray(jax.device_get(losses), np.float64))),
        "wall_s": round(time.perf_counter() - wall, 2),
        **{k: float(v) for k, v in metrics.items() if k != "loss"},
      }
      losses = []
      if stage.evaluate is not None and (done % stage.eval_every == 0 or done == stage.steps):
        record.update(stage.evaluate(state))
      metrics_log.append(record)
      if not np.isfinite(record["loss"]):
        raise diverged(f"the mean loss of the steps up to {done} is {record['loss']}")
    if done % stage.checkpoint_every == 0 or done == stage.steps:
      checkpoint(done)
  atomic_write_json(folder / DONE, {"steps": stage.steps})
  return state
