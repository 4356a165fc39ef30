"""One metrics writer for every long job: `metrics.jsonl` rows plus TensorBoard event files, a NaN/inf guard,
the global norms of a training step, and a profiler trace of chosen steps.

flax's imagenet example writes its summaries through clu's metric writers and hooks a profiler for a few
steps; big_vision logs gradient, parameter and update norms and stops on a NaN. clu's writers import
TensorFlow, so the event files come from tensorboardX (TensorFlow-free, the same event format); the rows of
`metrics.jsonl` are written exactly as before (`jax_aug.io.JsonlManifest`, keys sorted), so every reader of
them (jax_aug/study, jax_aug/twin, tests) is unaffected.

- `MetricsWriter(jsonl_path, logdir, *, purge_step=None, enabled=True)`: `.write_row(row, step=None)` appends
  one row to `metrics.jsonl` and writes its numeric fields as TensorBoard scalars (`prefix`/key);
  `.write_scalars(step, scalars)` writes TensorBoard scalars only (per-step values). Both refuse a NaN or
  infinite value with `NonFiniteMetricError` naming the step and the metric, before anything of that call is
  written, so the caller stops before it checkpoints a broken state. `purge_step`: a resumed run's first step;
  TensorBoard drops the events a killed run wrote from that step on, so a resumed run's curves have no
  duplicates; the rows of `metrics.jsonl` are trimmed by the job itself through `drop_rows_from` (the
  classifier by epoch, the fine-tuning trainer and the mini world's stages by step).
  `.close()` (also a context manager). `enabled=False` (not the chief host) writes nothing.
- `StepMetrics`: per-step device scalars buffered without a host sync; `.flush(writer, prefix)` reads them in
  one transfer and writes them (guarded) every `log_every_steps` and at the end of an epoch.
- `global_norms(grads, updates, params) -> {"grad_norm", "update_norm", "param_norm"}`: pure, called inside a
  jitted train step as extra outputs (they read the step's values and change none).
- `StepProfiler(logdir, first_step, num_steps, name="train")`: `with profiler.step(step, outputs_fn):` around
  each train step (the sampling engine: each batch's generation); traces steps [first_step, first_step +
  num_steps) with `jax.profiler` into `<logdir>/plugins/profile`, each step annotated `name` with its number
  (TensorBoard's profile plugin reads it; `perfetto_trace.json.gz` opens in ui.perfetto.dev).

Fine-tuning (jax_aug/finetune/trainer.py) uses it as the classifier trainer does (jax_aug/classifier/train.py):
  in the jitted step:  metrics = {"loss": loss, **metrics_lib.global_norms(grads, updates, new_params)}
  before the loop:     writer = metrics_lib.MetricsWriter(workdir / METRICS_FILE, workdir / metrics_lib.TENSORBOARD_DIR,
                                                          purge_step=first_step if resumed else None,
                                                          enabled=jax.process_index() == 0)
                       profiler = metrics_lib.StepProfiler(writer.logdir, config.profile_first_step,
                                                           config.profile_steps)
                       per_step = metrics_lib.StepMetrics()
  each step:           with profiler.step(step, lambda: loss): state, metrics = train_step(...)
                       per_step.add(step, metrics); every N steps and at the epoch's end:
                       per_step.flush(writer, "train/")   # raises NonFiniteMetricError naming the step
  each epoch's row:    writer.write_row(row, step=last_step)   # replaces metrics_log.append(row)
  at the end:          writer.close(); profiler.close()
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from jax_aug import io

TENSORBOARD_DIR = "tensorboard"
# Row fields that are indices or wall-clock stamps, not curves: kept in metrics.jsonl, not plotted.
NOT_PLOTTED = frozenset({"time", "epoch", "batch", "step"})


class NonFiniteMetricError(FloatingPointError):
  """A metric was NaN or infinite; the message names the job, the step and the metric."""


def global_norms(grads: Any, updates: Any, params: Any) -> dict:
  """L2 norms over whole trees: the gradient, the optimizer's update (new params - old params) and the
  parameters after the update. Pure; inside a jitted step they only add outputs."""
  return {
    "grad_norm": optax.tree.norm(grads),
    "update_norm": optax.tree.norm(updates),
    "param_norm": optax.tree.norm(params),
  }


def _is_number(value: Any) -> bool:
  """An int or float (Python, numpy or a 0-d array from the device), not a bool."""
  if value is None or isinstance(value, (bool, str)):
    return False
  dtype = np.asarray(value).dtype
  return np.ndim(value) == 0 and dtype != np.bool_ and np.issubdtype(dtype, np.number)


def check_finite(scalars: Mapping[str, Any], *, step: int, where: str) -> None:
  """Raises NonFiniteMetricError at the first NaN/inf number of `scalars` (in their order)."""
  for name, value in scalars.items():
    if _is_number(value) and not math.isfinite(float(value)):
      raise NonFiniteMetricError(
        f"{where}: metric {name!r} is {float(value)} at step {step}; stopping the run (the last checkpoint"
        " written before this step is kept)"
      )


def drop_rows_from(jsonl_path: str | os.PathLike, first: int, key: str = "step") -> None:
  """Drops the rows whose `key` ("step", or the classifier's "epoch") is >= `first` from a metrics.jsonl whose
  rows all carry it (what a killed run wrote after the point its resume starts from; the resumed run writes
  them again), as TensorBoard's purge_step drops their events."""
  rows = io.JsonlManifest(jsonl_path)
  found = rows.read()
  kept = [r for r in found if r[key] < first]
  if len(kept) != len(found):
    io.atomic_write_text(rows.path, "".join(rows.line(r) for r in kept))


class MetricsWriter:
  """metrics.jsonl (the rows as before) + TensorBoard events in `logdir`, both behind the NaN/inf guard."""

  def __init__(
    self, jsonl_path: str | os.PathLike, logdir: str | os.PathLike, *, purge_step: int | None = None, enabled: bool = True
  ):
    self.rows = io.JsonlManifest(jsonl_path)
    self.logdir = Path(logdir)
    self.purge_step = purge_step
    self.enabled = enabled
    self._num_rows = None
    self._events = None  # opened on the first write: a job with nothing left to do leaves no empty file

  def _tensorboard(self):
    if self._events is None:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._events = SummaryWriter(str(self.logdir), purge_step=self.purge_step, flush_secs=30)
    return self._events

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """TensorBoard scalars of one step; every value must be finite."""
    check_finite(scalars, step=step, where=str(self.rows.path.parent))
    if not self.enabled:
      return
    events = self._tensorboard()
    for name, value in scalars.items():
      events.add_scalar(name, float(value), global_step=int(step))

  def write_row(self, row: Mapping[str, Any], *, step: int | None = None, prefix: str = "") -> None:
    """Appends `row` to metrics.jsonl and writes its numeric fields (but NOT_PLOTTED) as scalars `prefix + key`
    at `step` (default: the row's position in metrics.jsonl, counting the rows already there)."""
    if step is None:
      if self._num_rows is None:
        self._num_rows = len(self.rows.read()) if self.enabled else 0
      step = self._num_rows
    check_finite(row, step=step, where=str(self.rows.path.parent))
    if not self.enabled:
      return
    self.rows.append(dict(row))
    self._num_rows = None if self._num_rows is None else self._num_rows + 1
    self.write_scalars(step, {prefix + k: v for k, v in row.items() if _is_number(v) and k not in NOT_PLOTTED})
    self.flush()  # a row is rare (an epoch, a batch of images, a class): on disk as soon as it is in the jsonl

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class StepMetrics:
  """Per-step metrics (device scalars) kept until `flush`, so the training loop never waits on the device
  to log them."""

  def __init__(self):
    self._pending: list[tuple[int, Mapping[str, Any]]] = []

  def add(self, step: int, metrics: Mapping[str, Any]) -> None:
    self._pending.append((step, metrics))

  def flush(self, writer: MetricsWriter, prefix: str = "") -> None:
    """Writes the buffered steps in order; the first non-finite value raises (the steps before it are written)."""
    pending, self._pending = jax.device_get(self._pending), []
    for step, metrics in pending:
      writer.write_scalars(step, {prefix + k: v for k, v in metrics.items()})
    writer.flush()


class StepProfiler:
  """A jax.profiler trace of steps [first_step, first_step + num_steps) (num_steps 0: off), as flax's imagenet
  example does; only the chief host traces. Steps before `first_step` (compilation) stay out of the trace."""

  def __init__(
    self, logdir: str | os.PathLike, first_step: int, num_steps: int, *, enabled: bool = True, name: str = "train"
  ):
    if num_steps < 0 or first_step < 0:
      raise ValueError(f"profile_first_step={first_step} and profile_steps={num_steps} must be >= 0")
    self.logdir = Path(logdir)
    self.first_step, self.last_step = first_step, first_step + num_steps - 1
    self.enabled = enabled and num_steps > 0
    self.name = name
    self.active = False

  @contextlib.contextmanager
  def step(self, step: int, outputs: Callable[[], Any] = lambda: None):
    """Around one step; `outputs()` gives the step's results, waited for before the trace of the last
    traced step stops (jax dispatches asynchronously)."""
    if self.enabled and step == self.first_step and not self.active:
      self.logdir.mkdir(parents=True, exist_ok=True)
      jax.profiler.start_trace(str(self.logdir), create_perfetto_trace=True)
      self.active = True
    with jax.profiler.StepTraceAnnotation(self.name, step_num=step):
      yield
    if self.active and step >= self.last_step:
      jax.block_until_ready(outputs())
      self.close()

  def close(self) -> None:
    """Stops a trace still running (a run that ended or failed inside the traced steps)."""
    if self.active:
      self.active = False
      jax.profiler.stop_trace()
