"""The trainer end to end on a small synthetic ImageNet with a tiny ResNet (same module and code path as
ResNet-50): it learns, 1 device == 4 devices == 2 hosts x 2 devices, and a killed run resumes exactly."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO_ROOT, _jax_env, _program

from jax_aug import sharding
from jax_aug.classifier import train
from jax_aug.data import sources, subsets, synthetic
from jax_aug.study.config_files import base_config

WNIDS = synthetic.DEFAULT_WNIDS[:4]
TIMING_FIELDS = {"train_seconds", "train_images_per_second"}


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
  """train: 20 images per class, validation: the other 8 of the train folder, test: the val folder."""
  root = synthetic.make_synthetic_imagenet(
    tmp_path_factory.mktemp("synthetic"), wnids=WNIDS, train_per_class=28, val_per_class=8, image_size=40, seed=0
  )
  records = sources.folder_records(root / "train", WNIDS)
  split = {"train": [], "validation": []}
  for wnid in WNIDS:
    of_class = sorted((r for r in records if r["wnid"] == wnid), key=lambda r: r["path"])
    split["train"] += of_class[:20]
    split["validation"] += of_class[20:]
  split["test"] = sources.folder_records(root / "val", WNIDS)
  paths = {}
  for name, rows in split.items():
    paths[name] = root / f"{name}.jsonl"
    subsets.write_manifest(paths[name], rows)
  return paths


def tiny_config(manifests, **schedule):
  config = base_config(REPO_ROOT / "configs", "classifier", "tiny")
  config.train_manifests = (str(manifests["train"]),)
  config.validation_manifest = str(manifests["validation"])
  config.test_manifest = str(manifests["test"])
  config.wnids = WNIDS
  config.global_batch_size = 16
  config.eval_batch_size = 16
  config.optimizer.learning_rate = 0.1
  config.schedule.update(schedule)
  return config


_RUN = """
import json
from ml_collections import ConfigDict
from jax_aug import sharding
from jax_aug.classifier import train
if {multihost}:
  sharding.initialize_distributed(COORDINATOR, NUM_PROCESSES, PROCESS_ID)
results = train.train_and_evaluate(ConfigDict(json.loads({config!r})), {workdir!r})
emit(results["top1"])
"""


def run_program(config, workdir, multihost=False):
  return _RUN.format(config=config.to_json(), workdir=str(workdir), multihost=multihost)


def final_params(workdir):
  latest = Path(workdir) / "checkpoints" / "latest"
  step = max(int(p.name) for p in latest.iterdir() if p.name.isdigit())
  path = latest / str(step) / "state"
  checkpointer = ocp.PyTreeCheckpointer()
  # As numpy arrays: the checkpoint may come from another device topology than this test process's.
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), checkpointer.metadata(path).item_metadata.tree)
  state = checkpointer.restore(path, restore_args=as_numpy)
  return {"params": state["params"], "batch_stats": state["batch_stats"]}, step


def assert_trees_close(a, b, rtol):
  flat_a = dict(_flatten(a))
  flat_b = dict(_flatten(b))
  assert flat_a.keys() == flat_b.keys()
  for key, value in flat_a.items():
    scale = max(np.abs(flat_b[key]).max(), 1e-6)
    err = np.abs(np.asarray(value) - np.asarray(flat_b[key])).max()
    assert err <= rtol * scale, f"{key}: max abs difference {err:.3g} > {rtol} * {scale:.3g}"


def _flatten(tree, prefix=""):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, f"{prefix}{key}/")
    else:
      yield f"{prefix}{key}", np.asarray(value)


def metrics_rows(workdir):
  rows = [json.loads(line) for line in (Path(workdir) / train.METRICS_FILE).read_text().splitlines()]
  return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in rows]


@pytest.fixture(scope="module")
def reference(manifests, tmp_path_factory):
  """One uninterrupted single-device run: 5 epochs of 5 steps."""
  config = tiny_config(manifests, max_epochs=5)
  workdir = tmp_path_factory.mktemp("reference")
  env = _jax_env(1)
  proc = subprocess.run(
    [sys.executable, "-c", _program(run_program(config, workdir))],
    env=env,
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-6000:]
  return config, workdir


@pytest.mark.slow
def test_short_run_learns_and_writes_results(reference):
  config, workdir = reference
  results = json.loads((workdir / train.RESULTS_FILE).read_text())
  assert results["eval_split"] == "test" and results["num_eval_images"] == 4 * 8
  # 4 classes: chance is 25%.
  assert results["top1"] >= 50.0, results
  assert set(results["per_class_top1"]) == set(WNIDS)
  per_class = np.mean(list(results["per_class_top1"].values()))
  assert per_class == pytest.approx(results["top1"])  # balanced test split: mean of classes == overall
  rows = metrics_rows(workdir)
  assert [r["epoch"] for r in rows] == list(range(5))
  best = max(range(5), key=lambda e: (rows[e]["validation_top1"], -e))
  assert results["best_epoch"] == best
  assert results["validation_top1"] == rows[best]["validation_top1"]
  assert results["epochs_trained"] == 5 and results["stop_reason"] == "max_epochs"
  assert results["config"]["wnids"] == list(WNIDS)
  assert rows[-1]["train_loss"] < rows[0]["train_loss"]


@pytest.mark.slow
def test_four_devices_and_two_hosts_match_one_device(reference, run_jax, run_multihost, tmp_path):
  config, ref_dir = reference
  ref_params, ref_step = final_params(ref_dir)
  ref_results = json.loads((ref_dir / train.RESULTS_FILE).read_text())

  run_jax(run_program(config, tmp_path / "four"), devices=4)
  params, step = final_params(tmp_path / "four")
  assert step == ref_step
  assert_trees_close(params, ref_params, rtol=1e-4)

  run_multihost(run_program(config, tmp_path / "hosts", multihost=True), processes=2, devices_per_process=2)
  params, step = final_params(tmp_path / "hosts")
  assert step == ref_step
  assert_trees_close(params, ref_params, rtol=1e-4)
  for name in ("four", "hosts"):
    results = json.loads((tmp_path / name / train.RESULTS_FILE).read_text())
    assert results["top1"] == ref_results["top1"], name


@pytest.mark.slow
def test_a_run_held_to_one_of_four_devices_is_the_one_device_run(reference, run_jax, tmp_path):
  """config.num_devices=1 in a process with 4 devices (the mini world's classifier beside its 2-device sampling):
  the single-device process's run, to float rounding (XLA's CPU threads are shared out by the process's device
  count: 9e-8 apart here, against 1e-4 for the run split over the 4), with the same results and metrics."""
  reference_config, ref_dir = reference
  config = reference_config.copy_and_resolve_references()
  config.num_devices = 1
  run_jax(run_program(config, tmp_path / "one_of_four"), devices=4)
  params, step = final_params(tmp_path / "one_of_four")
  ref_params, ref_step = final_params(ref_dir)
  assert step == ref_step
  assert_trees_close(params, ref_params, rtol=1e-5)
  results = json.loads((tmp_path / "one_of_four" / train.RESULTS_FILE).read_text())
  expected = json.loads((ref_dir / train.RESULTS_FILE).read_text())
  assert results.pop("config")["num_devices"] == 1
  expected.pop("config")
  assert {k: v for k, v in results.items() if not k.startswith("train_")} == {
    k: v for k, v in expected.items() if not k.startswith("train_")
  }
  for row, ref_row in zip(metrics_rows(tmp_path / "one_of_four"), metrics_rows(ref_dir), strict=True):
    assert row.keys() == ref_row.keys()
    for key, value in row.items():
      expected_value = pytest.approx(ref_row[key], rel=1e-5) if isinstance(value, float) else ref_row[key]
      assert value == expected_value, (key, row["epoch"])


def test_num_devices_beyond_those_there_or_over_hosts_is_refused(monkeypatch):
  devices = ["d0", "d1"]
  field = "config.num_devices"
  assert sharding.run_devices(0, devices, field=field) == devices
  assert sharding.run_devices(1, devices, field=field) == ["d0"]
  for bad in (3, -1, 1.5):
    with pytest.raises(ValueError, match=rf"config.num_devices={bad}: expected 0 \(every device\) or 1..2"):
      sharding.run_devices(bad, devices, field=field)
  monkeypatch.setattr(sharding.jax, "process_count", lambda: 2)
  with pytest.raises(ValueError, match=r"config.num_devices=1: a run over 2 hosts trains on every device"):
    sharding.run_devices(1, devices, field=field)


@pytest.mark.slow
def test_killed_run_resumes_to_identical_results(reference, manifests, tmp_path, run_jax):
  """Checkpoints every 2nd epoch (and the last), killed after epoch 1's: the resumed run redoes epochs 2-4 and
  ends with the uninterrupted every-epoch reference's results, metrics and parameters."""
  reference_config, ref_dir = reference
  config = reference_config.copy_and_resolve_references()
  config.checkpoint_every_epochs = 2
  workdir = tmp_path / "killed"
  proc = subprocess.Popen(
    [sys.executable, "-c", _program(run_program(config, workdir))],
    env=_jax_env(1),
    cwd=REPO_ROOT,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  latest, seen = workdir / "checkpoints" / "latest", set()
  try:
    deadline = time.time() + 300
    while not (latest / "1").is_dir():  # epoch 1 is done: the process is now inside epoch 2
      assert proc.poll() is None, "the run ended before it could be interrupted"
      assert time.time() < deadline, "no checkpoint appeared"
      seen |= {p.name for p in latest.iterdir() if p.name.isdigit()} if latest.is_dir() else set()
      time.sleep(0.02)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert "0" not in seen  # epoch 0 was not checkpointed
  assert not (workdir / train.RESULTS_FILE).exists()
  run_jax(run_program(config, workdir))
  results = json.loads((workdir / train.RESULTS_FILE).read_text())
  expected = json.loads((ref_dir / train.RESULTS_FILE).read_text())
  assert results.pop("config")["checkpoint_every_epochs"] == 2
  expected.pop("config")
  assert results == expected
  assert metrics_rows(workdir) == metrics_rows(ref_dir)
  params, _ = final_params(workdir)
  ref_params, _ = final_params(ref_dir)
  assert_trees_close(params, ref_params, rtol=0.0)


@pytest.mark.slow
def test_refuses_a_workdir_of_another_config(reference, manifests):
  config, workdir = reference
  other = tiny_config(manifests, max_epochs=6)
  with pytest.raises(ValueError, match="different config"):
    train.train_and_evaluate(other, workdir)


def test_missing_validation_manifest_is_named(manifests, tmp_path):
  config = tiny_config(manifests)
  config.validation_manifest = ""
  with pytest.raises(ValueError, match="validation_manifest is empty"):
    train.train_and_evaluate(config, tmp_path)


def test_score_manifests_are_scored_by_the_best_checkpoint(reference, manifests, tmp_path):
  """`score_manifests` (the mini world's recognition of generated images): each is evaluated like the test split
  with the best checkpoint: the test split itself scores the test top-1, one class's images that class's top-1."""
  import ml_collections

  config, workdir = reference
  expected = json.loads((workdir / train.RESULTS_FILE).read_text())
  test = subsets.read_manifest(manifests["test"])
  one_class = tmp_path / "one_class.jsonl"
  subsets.write_manifest(one_class, [r for r in test if r["wnid"] == WNIDS[2]])
  scoring = ml_collections.ConfigDict(config.to_dict())
  scoring.score_manifests = (str(manifests["test"]), str(one_class))
  results = train.train_and_evaluate(scoring, tmp_path / "run")  # the same training: same seed, data, schedule
  assert results["top1"] == expected["top1"] and results["best_epoch"] == expected["best_epoch"]
  assert results["scored"][str(manifests["test"])]["top1"] == expected["top1"]
  assert results["scored"][str(one_class)] == {
    "top1": expected["per_class_top1"][WNIDS[2]],
    "per_class_top1": {WNIDS[2]: expected["per_class_top1"][WNIDS[2]]},
    "num_images": 8,
    "skipped_images": 0,
  }


def test_runs_of_one_process_share_their_compiled_steps(manifests, tmp_path, monkeypatch):
  """A second run with the same network and optimizer traces nothing and repeats the first bit for bit; another
  network traces its own steps (the study's 58 runs per process each re-traced, 3.4 s apiece)."""
  from jax_aug.classifier import steps

  traces = []
  real_train_step = steps.train_step

  def counted(*args, **kwargs):
    traces.append(1)
    return real_train_step(*args, **kwargs)

  monkeypatch.setattr(steps, "train_step", counted)
  monkeypatch.setattr(train, "_RUN_STEPS", {})  # nothing shared with this process's earlier runs
  config = tiny_config(manifests, max_epochs=2)
  first = train.train_and_evaluate(config, tmp_path / "first")
  traced_by_first = len(traces)
  assert traced_by_first >= 1
  second = train.train_and_evaluate(config, tmp_path / "second")
  assert len(traces) == traced_by_first  # nothing traced again
  assert second == first
  assert metrics_rows(tmp_path / "second") == metrics_rows(tmp_path / "first")
  params_first, _ = final_params(tmp_path / "first")
  params_second, _ = final_params(tmp_path / "second")
  assert_trees_close(params_second, params_first, rtol=0.0)
  wider = tiny_config(manifests, max_epochs=1)
  wider.model.num_filters = 12
  train.train_and_evaluate(wider, tmp_path / "wider")
  assert len(traces) > traced_by_first
