"""The classifier trainer: ResNet on a subset (+ one resampled augmentation set), the paper's plateau
recipe, per-epoch validation, orbax best/latest checkpoints, exact resume, and a results JSON.

Resuming restarts the epoch after the latest checkpoint: the input order and augmentation of an epoch are
a pure function of (seed, epoch, record index) (jax_aug.data.pipeline), the train step is deterministic,
so the rerun epoch repeats the interrupted one exactly and the final metrics equal an uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict
from tqdm import tqdm

from jax_aug import io, sharding
from jax_aug import metrics as metrics_lib
from jax_aug.classifier import model as model_lib
from jax_aug.classifier import schedule, steps
from jax_aug.classifier.checkpoint import RunCheckpoints
from jax_aug.data import cache, pipeline, subsets

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
STEP_LOSSES_FILE = "step_losses.jsonl"
# The train loss of each of the first steps is logged (step_losses.jsonl) so a run can be compared with its
# PyTorch twin step by step (jax_aug/twin); later steps are only summarised per epoch.
LOGGED_FIRST_STEPS = 20
# Written for every step to TensorBoard (tags "train_step/<name>"), NaN/inf-guarded in this order.
STEP_METRICS = ("loss", "grad_norm", "update_norm", "param_norm")
STEP_PREFIX = "train_step/"
CONFIG_FILE = "config.json"


def config_record(config: ConfigDict) -> dict:
  return json.loads(json.dumps(config.to_dict()))


def _resolve_manifest(name: str, splits_dir: Path | None) -> Path:
  """A manifest path, or a split name ("subset", "validation", "subset_20", "test") of the data stage."""
  if name in subsets.SPLIT_NAMES:
    if splits_dir is None:
      raise ValueError(
        f"manifest {name!r} names a split, but the config has no data block to make the"
        " splits: give a path to a .jsonl manifest instead"
      )
    return splits_dir / f"{name}.jsonl"
  return Path(name)


def load_run_data(config: ConfigDict, workdir: str | os.PathLike) -> dict:
  """Records of the train / validation / test manifests and the class list (wnids, label order).

  With a `data` block in the config, the data stage's splits are made (or reused) in `<workdir>/splits`
  and split names in the manifest fields refer to them; the class list then defaults to the splits'.
  """
  splits_dir = None
  if config.get("data") is not None:
    paths = subsets.prepare_splits(config.data, workdir)
    splits_dir = paths["subset"].parent
  if not config.train_manifests:
    raise ValueError(
      "config.train_manifests is empty: expected the subset's manifest (and optionally one resampled augmentation set's)"
    )
  if not config.validation_manifest:
    raise ValueError(
      "config.validation_manifest is empty: the plateau schedule and the best checkpoint need a validation split"
    )
  train = pipeline.mix(*[subsets.read_manifest(_resolve_manifest(m, splits_dir)) for m in config.train_manifests])
  validation = subsets.read_manifest(_resolve_manifest(config.validation_manifest, splits_dir))
  test = subsets.read_manifest(_resolve_manifest(config.test_manifest, splits_dir)) if config.test_manifest else None
  wnids = list(config.wnids)
  if not wnids:
    if splits_dir is None:
      raise ValueError("config.wnids is empty: give the study's class list (label order)")
    wnids = list(io.read_json(splits_dir / "info.json")["wnids"])
  return {"train": train, "validation": validation, "test": test, "wnids": wnids}


def _check_config(config: ConfigDict, mesh) -> None:
  if not isinstance(config.checkpoint_every_epochs, int) or config.checkpoint_every_epochs < 1:
    raise ValueError(f"config.checkpoint_every_epochs={config.checkpoint_every_epochs!r}: expected an integer >= 1")
  cache.check_memory_cache(config.input.memory_cache_mb, config.input.num_workers)
  for name in ("global_batch_size", "eval_batch_size"):
    if config[name] % mesh.size:
      raise ValueError(f"config.{name}={config[name]} is not divisible by the {mesh.size} devices")
    if config[name] % jax.process_count():
      raise ValueError(f"config.{name}={config[name]} is not divisible by {jax.process_count()} hosts")


def evaluate(eval_step, variables: Any, records: Sequence[dict], *, wnids: Sequence[str], config: ConfigDict, mesh) -> dict:
  """Top-1 (%) overall (over images) and per class on `records`, each image counted once."""
  correct = np.zeros(len(wnids), np.int64)
  count = np.zeros(len(wnids), np.int64)
  skipped = 0
  keys = ("image", "label", "mask")
  for batch in sharding.prefetch_to_device(eval_loader(records, wnids=wnids, config=config), mesh, keys):
    skipped += int(batch["skipped"].sum())  # unreadable images of this host's rows, masked out
    out = eval_step(variables, {k: batch[k] for k in keys})
    correct += np.asarray(out["correct"])
    count += np.asarray(out["count"])
  return top1_summary(correct, count, wnids, skipped=skipped)


def top1_summary(correct: np.ndarray, count: np.ndarray, wnids: Sequence[str], *, skipped: int) -> dict:
  """{"top1", "per_class_top1", "num_images", "skipped_images"} from per-class counts of correct predictions
  and images, and the number of unreadable images the loader masked out."""
  per_class = {w: 100.0 * int(c) / int(n) for w, c, n in zip(wnids, correct, count) if n}
  return {
    "top1": 100.0 * int(correct.sum()) / max(int(count.sum()), 1),
    "per_class_top1": per_class,
    "num_images": int(count.sum()),
    "skipped_images": skipped,
  }


def train_loader(records: Sequence[dict], *, wnids: Sequence[str], epoch: int, config: ConfigDict, **hosts) -> Any:
  """The epoch's training batches of this host (the PyTorch twin consumes the same ones)."""
  return pipeline.make_train_loader(
    records,
    wnids=wnids,
    epoch=epoch,
    seed=config.seed,
    global_batch_size=config.global_batch_size,
    image_size=config.input.image_size,
    num_workers=config.input.num_workers,
    crop_scale=tuple(config.input.crop_scale),
    crop_ratio=tuple(config.input.crop_ratio),
    photometric=pipeline.Photometric(
      tuple(config.input.color_jitter), config.input.color_jitter_p, config.input.grayscale_p
    ),
    tfds_data_dir=config.input.tfds_data_dir or None,
    tfds_name=config.input.tfds_name,
    cache_dir=config.input.cache_dir or None,
    memory_cache_bytes=config.input.memory_cache_mb * 2**20,
    **hosts,
  )


def eval_loader(records: Sequence[dict], *, wnids: Sequence[str], config: ConfigDict, **hosts) -> Any:
  return pipeline.make_eval_loader(
    records,
    wnids=wnids,
    batch_size=config.eval_batch_size,
    image_size=config.input.image_size,
    crop_fraction=config.input.eval_crop_fraction,
    num_workers=config.input.num_workers,
    tfds_data_dir=config.input.tfds_data_dir or None,
    tfds_name=config.input.tfds_name,
    cache_dir=config.input.cache_dir or None,
    memory_cache_bytes=config.input.memory_cache_mb * 2**20,
    **hosts,
  )


def _train_epoch(
  train_step,
  state,
  records,
  *,
  wnids,
  epoch: int,
  config: ConfigDict,
  mesh,
  writer: metrics_lib.MetricsWriter,
  profiler: metrics_lib.StepProfiler,
):
  """One epoch; returns the state, the epoch's mean metrics and the losses of its first steps (for the
  step-by-step comparison with the PyTorch twin, jax_aug/twin). Every step's STEP_METRICS go to `writer`
  every config.log_every_steps steps and at the epoch's end, where a NaN/inf one stops the run (before the
  epoch's checkpoint)."""
  num_steps = pipeline.steps_per_epoch(len(records), config.global_batch_size)
  loss_sum, correct_sum, skipped = jnp.zeros(()), jnp.zeros((), jnp.int32), 0
  first_losses = []
  per_step = metrics_lib.StepMetrics()
  progress = tqdm(total=num_steps, desc=f"epoch {epoch}", unit="step", leave=False, disable=jax.process_index() != 0)
  batches = train_loader(records, wnids=wnids, epoch=epoch, config=config)
  for step, batch in enumerate(sharding.prefetch_to_device(batches, mesh, ("image", "label"))):
    global_step = epoch * num_steps + step
    # The lambda reads `state` when the block exits, i.e. the step's new state: late binding is intended.
    with profiler.step(global_step, lambda: state):  # noqa: B023
      state, metrics = train_step(state, {"image": batch["image"], "label": batch["label"]})
    per_step.add(global_step, {k: metrics[k] for k in STEP_METRICS})
    loss_sum, correct_sum = loss_sum + metrics["loss"], correct_sum + metrics["correct"]
    if global_step < LOGGED_FIRST_STEPS:
      first_losses.append(metrics["loss"])
    skipped += int(batch["skipped"].sum())  # unreadable images replaced by the next readable record
    progress.update()
    if (step + 1) % config.log_every_steps == 0:
      per_step.flush(writer, STEP_PREFIX)
      progress.set_postfix(loss=f"{float(metrics['loss']):.3f}")
  progress.close()
  per_step.flush(writer, STEP_PREFIX)
  return (
    state,
    {
      "train_loss": float(loss_sum) / num_steps,
      "train_top1": 100.0 * int(correct_sum) / (num_steps * config.global_batch_size),
      "train_skipped_images": skipped,
    },
    [float(loss) for loss in first_losses],
  )


def step_loss_rows(epoch: int, steps_per_epoch: int, losses: Sequence[float]) -> list[dict]:
  return [{"step": epoch * steps_per_epoch + i, "epoch": epoch, "loss": loss} for i, loss in enumerate(losses)]


def append_step_losses(path: Path, rows: Sequence[dict]) -> None:
  """Adds one epoch's first-step losses to `path`, replacing rows of the same steps (a redone epoch)."""
  if not rows:
    return
  steps_written = {r["step"] for r in rows}
  kept = [r for r in io.JsonlManifest(path).read() if r["step"] not in steps_written] if path.exists() else []
  io.atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept + list(rows)))


def state_shardings(config: ConfigDict, model, tx, mesh) -> steps.TrainState:
  """The train state's layout chosen by config.parameter_sharding (jax_aug.sharding)."""
  return steps.state_shardings(model, tx, mesh, config.input.image_size, config.parameter_sharding)


@dataclasses.dataclass(frozen=True)
class RunSteps:
  """What a run compiles: its network, optimizer, state layout and jitted train / eval steps."""

  model: Any
  tx: Any
  layout: steps.TrainState
  train_step: Any
  eval_step: Any


# Runs of one process with the same network, optimizer, input size, parameter sharding, classes and mesh share
# their jitted steps: a new jax.jit object per run traces again and reloads its programs even from the persistent
# compilation cache (3.4 s per run of the mini study's tiny ResNet, 58 runs per study; docs/mini_world.md).
_RUN_STEPS: dict[tuple, RunSteps] = {}
_MAX_RUN_STEPS = 4


def run_steps(config: ConfigDict, num_classes: int, mesh) -> RunSteps:
  """The run's `RunSteps`, built once per process for each distinct (model, optimizer, input size, parameter
  sharding, classes, mesh); the jitted steps are pure, so sharing them leaves every run's results unchanged."""
  fields = (config.model, config.optimizer, config.input.image_size, config.parameter_sharding, num_classes)
  key = (json.dumps([f.to_dict() if isinstance(f, ConfigDict) else f for f in fields], sort_keys=True), mesh)
  if key not in _RUN_STEPS:
    model = model_lib.build_model(config.model, num_classes=num_classes, num_devices=mesh.size)
    tx = steps.make_optimizer(config.optimizer)
    layout = state_shardings(config, model, tx, mesh)
    train_step = steps.jit_train_step(model, tx, mesh, layout)
    eval_step = steps.jit_eval_step(model, num_classes, mesh, layout)
    while len(_RUN_STEPS) >= _MAX_RUN_STEPS:  # the oldest entry out: its compiled programs are freed
      _RUN_STEPS.pop(next(iter(_RUN_STEPS)))
    _RUN_STEPS[key] = RunSteps(model, tx, layout, train_step, eval_step)
  return _RUN_STEPS[key]


def initial_state(config: ConfigDict, model, tx, mesh) -> steps.TrainState:
  """The train state at step 0: parameters drawn from config.seed (the PyTorch twin starts from them)."""
  return jax.jit(
    lambda key: steps.create_train_state(model, tx, key, config.input.image_size),
    out_shardings=state_shardings(config, model, tx, mesh),
  )(jax.random.key(config.seed))


def epoch_last_step(epoch: int, num_train: int, config: ConfigDict) -> int:
  """The TensorBoard step of an epoch's row: its last train step (steps count from 0 over the run)."""
  return (epoch + 1) * pipeline.steps_per_epoch(num_train, config.global_batch_size) - 1


def epoch_row(
  epoch: int,
  learning_rate: float,
  train_metrics: dict,
  val: dict,
  plateau,
  decision,
  train_seconds: float,
  *,
  num_train: int,
  config: ConfigDict,
) -> dict:
  """One row of metrics.jsonl (the PyTorch twin writes the same rows)."""
  images = pipeline.steps_per_epoch(num_train, config.global_batch_size) * config.global_batch_size
  return {
    "epoch": epoch,
    "learning_rate": learning_rate,
    **train_metrics,
    "validation_top1": val["top1"],
    "validation_skipped_images": val["skipped_images"],
    "best_validation_top1": plateau.best_accuracy,
    "best_epoch": plateau.best_epoch,
    "lr_reduced": decision.lr_reduced,
    "train_seconds": train_seconds,
    "train_images_per_second": images / train_seconds,
  }


def results_record(
  final: dict,
  eval_split: str,
  best_validation: dict,
  *,
  best_epoch: int,
  plateau,
  stop_reason: str | None,
  data: dict,
  config: ConfigDict,
) -> dict:
  """results.json's dict (see train_and_evaluate)."""
  return {
    "top1": final["top1"],
    "per_class_top1": final["per_class_top1"],
    "eval_split": eval_split,
    "num_eval_images": final["num_images"],
    "validation_top1": best_validation["top1"],
    "validation_per_class_top1": best_validation["per_class_top1"],
    "best_epoch": best_epoch,
    "epochs_trained": plateau.last_epoch + 1,
    "stop_reason": stop_reason,
    "num_train_images": len(data["train"]),
    "num_classes": len(data["wnids"]),
    "wnids": data["wnids"],
    "resample_index": config.resample_index,
    "seed": config.seed,
    "config": config_record(config),
  }


def train_and_evaluate(config: ConfigDict, workdir: str | os.PathLike) -> dict:
  """Trains one classifier in `workdir` (resuming what is there) and returns the results JSON's dict.

  results.json: "top1" and "per_class_top1" ({wnid: %}) on the test split with the best-validation
  checkpoint (on the validation split when no test manifest is configured; "eval_split" says which),
  "validation_top1", "best_epoch", "epochs_trained", "stop_reason", "resample_index", "config"; with the
  optional `config.score_manifests` (record manifests, e.g. sets of generated images; not a field of the
  study's classifier block), "scored": {manifest: the same top-1 summary} of the best checkpoint on each.
  """
  workdir = Path(workdir)
  is_chief = jax.process_index() == 0
  config_json = config_record(config)
  results_path, metrics_path, config_path = (workdir / RESULTS_FILE, workdir / METRICS_FILE, workdir / CONFIG_FILE)
  if config_path.exists() and io.read_json(config_path) != config_json:
    raise ValueError(f"{workdir} holds a run of a different config ({config_path}); use a new workdir")
  if results_path.exists():
    return io.read_json(results_path)
  if is_chief:
    io.atomic_write_json(config_path, config_json)

  data = load_run_data(config, workdir)
  wnids = data["wnids"]
  mesh = sharding.make_mesh(sharding.run_devices(config.num_devices, field="config.num_devices"))
  _check_config(config, mesh)
  compiled = run_steps(config, len(wnids), mesh)
  state = initial_state(config, compiled.model, compiled.tx, mesh)
  train_step, eval_step = compiled.train_step, compiled.eval_step
  checkpoints = RunCheckpoints(workdir)
  plateau = schedule.initial_state(config.optimizer.learning_rate)
  first_epoch, stop_reason = 0, None
  if checkpoints.latest_epoch() is not None:
    last, state, meta = checkpoints.restore_latest(state)
    plateau, first_epoch = schedule.PlateauState.from_json(meta["schedule"]), last + 1
    stop_reason = meta["stop_reason"]
    log.info("resuming %s after epoch %d", workdir, last)
    if is_chief:
      metrics_lib.drop_rows_from(metrics_path, last + 1, key="epoch")
  # A resumed run's events start at its first step: TensorBoard drops what the killed run wrote from there.
  writer = metrics_lib.MetricsWriter(
    metrics_path,
    workdir / metrics_lib.TENSORBOARD_DIR,
    enabled=is_chief,
    purge_step=epoch_last_step(first_epoch - 1, len(data["train"]), config) + 1 if first_epoch else None,
  )
  profiler = metrics_lib.StepProfiler(writer.logdir, config.profile_first_step, config.profile_steps, enabled=is_chief)

  epoch, best = first_epoch, None  # best: (epoch, variables, meta) improved on since the last checkpoint
  try:
    while not plateau.stop:
      state = steps.set_learning_rate(state, plateau.learning_rate)
      start = time.time()
      state, train_metrics, first_losses = _train_epoch(
        train_step,
        state,
        data["train"],
        wnids=wnids,
        epoch=epoch,
        config=config,
        mesh=mesh,
        writer=writer,
        profiler=profiler,
      )
      train_seconds = time.time() - start
      val = evaluate(eval_step, state.variables(), data["validation"], wnids=wnids, config=config, mesh=mesh)
      learning_rate = plateau.learning_rate
      plateau, decision = schedule.update(plateau, epoch, val["top1"], **config.schedule.to_dict())
      row = epoch_row(
        epoch,
        learning_rate,
        train_metrics,
        val,
        plateau,
        decision,
        train_seconds,
        num_train=len(data["train"]),
        config=config,
      )
      # The row first: a NaN/inf in it stops the run before any checkpoint of this epoch is written.
      writer.write_row(row, step=epoch_last_step(epoch, len(data["train"]), config))
      checkpoint_now = plateau.stop or (epoch + 1) % config.checkpoint_every_epochs == 0
      if decision.improved:
        # Saved later, the best needs a copy: the state's buffers are donated to the next epoch's steps.
        variables = state.variables() if checkpoint_now else jax.tree.map(jnp.copy, state.variables())
        best = (epoch, variables, {"epoch": epoch, "validation": val})
      if is_chief:
        append_step_losses(
          workdir / STEP_LOSSES_FILE,
          step_loss_rows(epoch, pipeline.steps_per_epoch(len(data["train"]), config.global_batch_size), first_losses),
        )
        log.info("epoch %d: %s", epoch, {k: row[k] for k in ("train_loss", "validation_top1")})
      stop_reason = decision.stop_reason
      if checkpoint_now:
        # Best before latest: a resume from `latest` never finds a best checkpoint newer than it (the epochs it
        # redoes find their improvements again).
        if best is not None:
          checkpoints.save_best(*best)
          best = None
        checkpoints.save_latest(epoch, state, {"schedule": plateau.to_json(), "stop_reason": stop_reason})
      epoch += 1
  finally:
    profiler.close()
    writer.close()

  best_epoch, best_variables, best_meta = checkpoints.restore_best(state.variables())
  checkpoints.close()
  if data["test"] is not None:
    final, eval_split = evaluate(eval_step, best_variables, data["test"], wnids=wnids, config=config, mesh=mesh), "test"
  else:
    final, eval_split = best_meta["validation"], "validation"
  scored = {
    str(manifest): evaluate(
      eval_step, best_variables, subsets.read_manifest(manifest), wnids=wnids, config=config, mesh=mesh
    )
    for manifest in config.get("score_manifests", ())
  }
  results = results_record(
    final,
    eval_split,
    best_meta["validation"],
    best_epoch=best_epoch,
    plateau=plateau,
    stop_reason=stop_reason,
    data=data,
    config=config,
  )
  if scored:
    results["scored"] = scored
  if is_chief:
    io.atomic_write_json(results_path, results)
  return results
