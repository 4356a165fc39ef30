"""jax_aug.metrics through the classifier trainer: TensorBoard events equal to metrics.jsonl (read back with
tensorboard's own reader, not the tensorboardX that wrote them), the NaN guard on a poisoned batch, exact
resume of the events, the train step's global norms against numpy, and a profiler trace of the configured step.
The same through the fine-tuning trainer (one test on the tiny SD of the fine-tuning tests)."""

import gzip
import hashlib
import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT
from finetune_support import tiny_sd_path
from tensorboard.backend.event_processing import event_accumulator, event_file_loader

from jax_aug import metrics, sharding
from jax_aug.classifier import model as model_lib
from jax_aug.classifier import steps, train
from jax_aug.classifier.checkpoint import RunCheckpoints
from jax_aug.data import sources, subsets, synthetic
from jax_aug.finetune import checkpoints as finetune_checkpoints
from jax_aug.finetune import trainer
from jax_aug.study.config_files import base_config, method_config

WNIDS = synthetic.DEFAULT_WNIDS[:4]
POISONED_STEP = 3  # epoch 1's second step: epoch 1's first step is already in the events when it fails


def tiny_config(tmp_path: Path):
  """4 classes, 8 train images each: 2 steps of 16 per epoch, 2 epochs; step 1 traced."""
  root = synthetic.make_synthetic_imagenet(
    tmp_path / "synthetic", wnids=WNIDS, train_per_class=12, val_per_class=1, image_size=36, seed=0
  )
  records = sources.folder_records(root / "train", WNIDS)
  split = {"train": [], "validation": []}
  for wnid in WNIDS:
    of_class = sorted((r for r in records if r["wnid"] == wnid), key=lambda r: r["path"])
    split["train"] += of_class[:8]
    split["validation"] += of_class[8:]
  for name, rows in split.items():
    subsets.write_manifest(root / f"{name}.jsonl", rows)
  config = base_config(REPO_ROOT / "configs", "classifier", "tiny")
  config.train_manifests = (str(root / "train.jsonl"),)
  config.validation_manifest = str(root / "validation.jsonl")
  config.wnids = WNIDS
  config.global_batch_size = 16
  config.eval_batch_size = 16
  config.schedule.max_epochs = 2
  config.log_every_steps = 1
  config.profile_first_step, config.profile_steps = 1, 1
  return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A run whose step 3 gets a NaN batch (through the production loader and train step), then the same run
  resumed without the poison."""
  tmp_path = tmp_path_factory.mktemp("metrics")
  config, workdir = tiny_config(tmp_path), tmp_path / "run"
  real_loader = train.train_loader

  def poisoned_loader(records, *, epoch, config, **kwargs):
    for step, batch in enumerate(real_loader(records, epoch=epoch, config=config, **kwargs)):
      if epoch * 2 + step == POISONED_STEP:
        batch = {**batch, "image": np.full(batch["image"].shape, np.nan, np.float32)}
      yield batch

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, "train_loader", poisoned_loader)
    with pytest.raises(metrics.NonFiniteMetricError) as failure:
      train.train_and_evaluate(config, workdir)
  checkpoints = RunCheckpoints(workdir)
  after_failure = {
    "error": str(failure.value),
    "latest": checkpoints.latest_epoch(),
    "best": checkpoints.best_epoch(),
    "results": (workdir / train.RESULTS_FILE).exists(),
    "rows": [json.loads(line) for line in (workdir / train.METRICS_FILE).read_text().splitlines()],
  }
  checkpoints.close()
  results = train.train_and_evaluate(config, workdir)
  return config, workdir, after_failure, results


@pytest.mark.slow
def test_nan_guard_names_step_and_metric_and_keeps_the_checkpoint(runs):
  _, _, after_failure, _ = runs
  # The first of STEP_METRICS that is NaN: on XLA's CPU backend ReLU maps the NaN activations to 0, so the loss
  # stays finite and the gradient is the first NaN; a backend that propagates them names the loss.
  assert re.search(rf"metric 'train_step/(loss|grad_norm)' is nan at step {POISONED_STEP}\b", after_failure["error"]), (
    after_failure["error"]
  )
  assert after_failure["latest"] == 0 and after_failure["best"] == 0  # epoch 1 wrote no checkpoint
  assert not after_failure["results"]
  assert [r["epoch"] for r in after_failure["rows"]] == [0]


@pytest.mark.slow
def test_tensorboard_events_equal_metrics_jsonl_after_resume(runs):
  config, workdir, _, results = runs
  assert results["epochs_trained"] == 2
  events = event_accumulator.EventAccumulator(
    str(workdir / metrics.TENSORBOARD_DIR), size_guidance={event_accumulator.SCALARS: 0}
  )
  events.Reload()
  scalars = lambda tag: [(e.step, e.value) for e in events.Scalars(tag)]
  # Per step: the losses step_losses.jsonl holds (every step of this short run), each step once although
  # the failed run had written step 2 before the resumed run redid it.
  step_losses = [json.loads(line) for line in (workdir / train.STEP_LOSSES_FILE).read_text().splitlines()]
  assert [r["step"] for r in step_losses] == [0, 1, 2, 3]
  assert scalars("train_step/loss") == [(r["step"], np.float32(r["loss"])) for r in step_losses]
  for name in ("grad_norm", "update_norm", "param_norm"):
    steps_and_values = scalars(f"train_step/{name}")
    assert [s for s, _ in steps_and_values] == [0, 1, 2, 3]
    assert all(np.isfinite(v) and v > 0 for _, v in steps_and_values)
  # Per epoch: every number of metrics.jsonl's rows, at the epoch's last step.
  rows = [json.loads(line) for line in (workdir / train.METRICS_FILE).read_text().splitlines()]
  assert [r["epoch"] for r in rows] == [0, 1]
  for key in (
    "train_loss",
    "train_top1",
    "validation_top1",
    "learning_rate",
    "best_validation_top1",
    "train_images_per_second",
  ):
    assert scalars(key) == [(2 * r["epoch"] + 1, np.float32(r[key])) for r in rows], key
  assert "epoch" not in events.Tags()["scalars"] and "lr_reduced" not in events.Tags()["scalars"]
  # What makes TensorBoard drop the failed run's step 2: the resumed run's file starts a session at step 2.
  files = sorted((workdir / metrics.TENSORBOARD_DIR).glob("events.out.tfevents.*"))
  assert len(files) == 2
  starts = [e.step for e in event_file_loader.EventFileLoader(str(files[1])).Load() if e.HasField("session_log")]
  assert starts == [2]


@pytest.mark.slow
def test_profiler_traces_the_configured_step(runs):
  _, workdir, _, _ = runs
  traces = list((workdir / metrics.TENSORBOARD_DIR / "plugins" / "profile").glob("*/perfetto_trace.json.gz"))
  assert len(traces) == 1  # the resumed run starts after the traced step
  assert list(traces[0].parent.glob("*.xplane.pb"))  # TensorBoard's profile plugin reads this one
  events = json.loads(gzip.decompress(traces[0].read_bytes()))["traceEvents"]
  assert sorted(e["args"]["step_num"] for e in events if e.get("name") == "train") == ["1"]


def test_step_norms_equal_numpy_and_change_no_number(tmp_path):
  """grad/update/param norms of one SGD step from the parameters before and after it: with momentum's buffer
  empty, p1 = p0 - lr * (g + wd * p0)."""
  config = base_config(REPO_ROOT / "configs", "classifier", "tiny")
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = model_lib.build_model(config.model, num_classes=4, num_devices=1)
  tx = steps.make_optimizer(config.optimizer)
  state = train.initial_state(config, model, tx, mesh)
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(
    {"image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), "label": rng.integers(0, 4, 8).astype(np.int32)}, mesh
  )
  before = jax.tree.map(np.asarray, state.params)
  without_metrics = jax.jit(lambda s, b: steps.train_step(s, b, model=model, tx=tx)[0])(state, batch)
  new_state, out = steps.jit_train_step(model, tx, mesh)(state, batch)
  after = jax.tree.map(np.asarray, new_state.params)
  # The extra outputs change nothing: the step compiled without them gives bit-identical parameters.
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, without_metrics.params), after)

  norm = lambda tree: np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in jax.tree.leaves(tree)))
  lr, wd = config.optimizer.learning_rate, config.optimizer.weight_decay
  grads = jax.tree.map(lambda p0, p1: (p0.astype(np.float64) - p1) / lr - wd * p0, before, after)
  expected = {
    "update_norm": norm(jax.tree.map(np.subtract, after, before)),
    "param_norm": norm(after),
    "grad_norm": norm(grads),
  }
  rtol = 1e-6  # seen: 3.5e-7 (update), 1.8e-7 (gradient), 6e-8 (parameters); float32 on device vs float64
  for name, value in expected.items():
    np.testing.assert_allclose(float(out[name]), value, rtol=rtol, err_msg=name)
  # Negative controls, plausible mix-ups the tolerance catches: the parameters' norm before the step (2.2e-6
  # away) and the norm of the decayed gradient g + wd * p that SGD follows.
  wrong = {"param_norm": norm(before), "grad_norm": norm(jax.tree.map(lambda g, p0: g + wd * p0, grads, before))}
  for name, value in wrong.items():
    assert abs(float(out[name]) - value) > rtol * value, name


def test_writer_refuses_non_finite_rows_before_writing(tmp_path):
  writer = metrics.MetricsWriter(tmp_path / "metrics.jsonl", tmp_path / "tb")
  writer.write_row({"batch": 0, "images": 4, "images_per_second": 2.0}, step=0)
  with pytest.raises(metrics.NonFiniteMetricError, match=r"metric 'images_per_second' is inf at step 1"):
    writer.write_row({"batch": 1, "images": 4, "images_per_second": float("inf")}, step=1)
  writer.close()
  assert [json.loads(line)["batch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0]


def test_drop_rows_from_step_removes_what_a_killed_run_wrote_after_its_resume_point(tmp_path):
  # The fine-tuning trainer's rows: one per step and one per epoch, all with their step. A killed run wrote
  # steps 1..5 (epoch row at step 4) and resumes from step 4's checkpoint, so its first step is 5: the rows of
  # steps >= 5 go (the resumed run writes them again), the rest stay byte for byte.
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": s, "train_loss": 1.0 / s} for s in range(1, 6)]
  rows.insert(4, {"step": 4, "epoch": 1, "val_loss": 0.5})
  path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
  before = path.read_text().splitlines(keepends=True)
  metrics.drop_rows_from(path, 6)  # nothing after step 5: the file is left as it is
  assert path.read_text().splitlines(keepends=True) == before
  metrics.drop_rows_from(path, 5)
  assert path.read_text() == "".join(before[:5])  # steps 1..4 and the epoch row


def _tree_digest(directory: Path) -> str:
  digest = hashlib.sha256()
  for path in sorted(p for p in directory.rglob("*") if p.is_file()):
    digest.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes())
  return digest.hexdigest()


@pytest.mark.slow
def test_finetune_events_equal_metrics_jsonl_and_nan_stops_before_checkpoint(tmp_path):
  """ft_conditioning on the tiny SD, 2 epochs of 2 steps (steps count from 1). Step 4 (epoch 2's second) gets a
  NaN image through the production reader and train step: the run stops naming step 4 and its metric, the epoch-1
  checkpoint is byte-identical to what it was when epoch 2 began, and no epoch-2 checkpoint exists. TensorBoard
  holds the numbers of metrics.jsonl's rows, and a resumed run would purge the events from step 3 on. Step 2 is
  traced by the profiler."""
  config = method_config(REPO_ROOT / "configs", "ft_conditioning", "tiny")
  config.model.path = str(tiny_sd_path())
  config.data.wnids = ("n01491361", "n01440764")
  config.data.synthetic.train_per_class = 20  # subset: 2 per class, validation: 2 per class
  config.splits_dir = str(tmp_path / "data" / "splits")
  config.finetune.batch_size = 2
  config.finetune.policy.max_epochs = 2
  config.finetune.profile_first_step, config.finetune.profile_steps = 2, 1  # the block's, not sampling's
  subsets.prepare_splits(config.data, tmp_path / "data")
  workdir = tmp_path / "run"
  real_batches = trainer.BatchReader.batches
  epoch_1_digest = []

  def poisoned(self, order, epoch, start=0):
    for position, batch in enumerate(real_batches(self, order, epoch, start), start):
      if epoch == 2 and position == 1:
        epoch_1_digest.append(_tree_digest(finetune_checkpoints.epoch_dir(workdir, 1)))
        batch = {**batch, "image": np.full(batch["image"].shape, np.nan, batch["image"].dtype)}
      yield batch

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(trainer.BatchReader, "batches", poisoned)
    with pytest.raises(metrics.NonFiniteMetricError) as failure:
      trainer.finetune(config, workdir)
  # The NaN image makes the loss and the gradient NaN; the norms are read before the loss rows.
  assert re.search(r"metric 'train_step/grad_norm' is nan at step 4\b", str(failure.value)), str(failure.value)
  assert str(workdir) in str(failure.value)
  assert epoch_1_digest and _tree_digest(finetune_checkpoints.epoch_dir(workdir, 1)) == epoch_1_digest[0]
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["epoch_1"]
  after_failure = finetune_checkpoints.read_progress(workdir)
  assert after_failure["step"] == 2 and after_failure["epoch"] == 1 and after_failure["stopped"] is None

  rows = [json.loads(line) for line in (workdir / trainer.METRICS_FILE).read_text().splitlines()]
  step_rows, epoch_rows = [r for r in rows if "train_loss" in r], [r for r in rows if "val_loss" in r]
  assert [r["step"] for r in step_rows] == [1, 2] and [r["step"] for r in epoch_rows] == [2]
  events = event_accumulator.EventAccumulator(
    str(workdir / metrics.TENSORBOARD_DIR), size_guidance={event_accumulator.SCALARS: 0}
  )
  events.Reload()
  scalars = lambda tag: [(e.step, e.value) for e in events.Scalars(tag)]
  for key, of in (
    ("train_loss", step_rows),
    ("skipped_images", step_rows),
    ("epoch_train_loss", epoch_rows),
    ("val_loss", epoch_rows),
    ("val_skipped_images", epoch_rows),
  ):
    assert scalars(key) == [(r["step"], np.float32(r[key])) for r in of], key
  assert not {"step", "epoch", "kept", "stopped"} & set(events.Tags()["scalars"])
  for name in ("grad_norm", "update_norm", "param_norm"):  # step 3's too: written before step 4 failed
    steps_and_values = scalars(trainer.STEP_PREFIX + name)
    assert [s for s, _ in steps_and_values] == [1, 2, 3], name
    assert all(np.isfinite(v) and v > 0 for _, v in steps_and_values), name
  # param_norm is the norm of the parameters after the step: step 2's equals epoch 1's checkpoint (float64 numpy).
  kept = finetune_checkpoints.restore_trainable(finetune_checkpoints.epoch_dir(workdir, 1))
  expected = np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(kept)))
  param_norm = dict(scalars(trainer.STEP_PREFIX + "param_norm"))
  np.testing.assert_allclose(param_norm[2], expected, rtol=1e-6)
  # Negative control: the norm of the parameters before step 2 (step 1's), a plausible mix-up, is caught.
  assert abs(param_norm[1] - expected) > 1e-6 * expected
  # The run resumed from step 2 drops the failed run's events from step 3 on (MetricsWriter's purge, tested
  # through the classifier above).
  run, _ = trainer.setup(config, workdir)
  run.checkpoints.close()
  assert run.writer.purge_step == 3
  traces = list((workdir / metrics.TENSORBOARD_DIR / "plugins" / "profile").glob("*/perfetto_trace.json.gz"))
  assert len(traces) == 1
  trace_events = json.loads(gzip.decompress(traces[0].read_bytes()))["traceEvents"]
  assert sorted(e["args"]["step_num"] for e in trace_events if e.get("name") == "train") == ["2"]
