"""The study plan: which stages the selected methods need, in an order where inputs come first; stage
selection refuses to run a stage whose inputs are left out."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from jax_aug.study import methods as methods_lib
from jax_aug.study import runner
from jax_aug.study.config_files import load_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _tiny(**overrides):
  config = load_module(CONFIGS / "tiny.py").get_config()
  for key, value in overrides.items():
    config[key] = value
  return config


def test_full_plan_orders_inputs_first_and_covers_every_method(tmp_path):
  stages = runner.plan(_tiny(), tmp_path)
  names = [s.name for s in stages]
  assert len(names) == len(set(names))
  for index, stage in enumerate(stages):
    for upstream in stage.upstream:
      assert upstream in names[:index], f"{stage.name} runs before its input {upstream}"
  assert names[:2] == ["check", "data"] and names[-1] == "report"
  for method in methods_lib.select(_tiny(), "all"):
    assert f"train/{method.name}/r0" in names and f"train/{method.name}/r1" in names
    if method.name == "boomerang":  # its strength is chosen on validation, like a checkpoint
      assert "select/boomerang" in names and "augment/boomerang" not in names
    elif method.kind == "prompt":
      assert f"augment/{method.name}" in names
    if method.kind == "finetuned":
      # The tiny learning-rate grid: 2 runs, then the choice, then the checkpoint selection on the winner.
      runs = [f"finetune/{method.name}/lr{i}" for i in range(2)]
      assert f"finetune/{method.name}/lr2" not in names
      assert (
        max(names.index(r) for r in runs) < names.index(f"lr_search/{method.name}") < names.index(f"select/{method.name}")
      )
    if method.kind != "baseline":
      assert f"resample/{method.name}" in names
  # Ablations are off by default.
  assert not any(n.endswith(("_k1", "_k10", "_k15", "_first_lemma")) for n in names)
  # Retrieval writes the exclusion list, so everything that trains or resamples comes after it.
  for stage in stages:
    if stage.name.startswith(("train/", "resample/", "select/")):
      assert "retrieval" in stage.upstream
  # One tiny SD for the whole study, built before any DM stage.
  assert names.index("models") < min(names.index(n) for n in names if n.startswith(("augment/", "finetune/")))


def test_ablations_add_their_stages_and_rows(tmp_path):
  names = [s.name for s in runner.plan(_tiny(methods="baseline_10pct", ablations="all"), tmp_path)]
  for ablation in ("ft_cluster_conditioning_k1", "ft_cluster_conditioning_k10", "ft_cluster_conditioning_k15"):
    assert f"lr_search/{ablation}" in names and f"select/{ablation}" in names and f"train/{ablation}/r1" in names
  assert "augment/simple_prompt_first_lemma" in names and "train/simple_prompt_first_lemma/r0" in names
  with pytest.raises(ValueError, match=r"unknown ablation\(s\) \['k20'\]"):
    runner.plan(_tiny(ablations="k20"), tmp_path)


def test_baseline_only_plan_needs_no_models_or_retrieval(tmp_path):
  names = [s.name for s in runner.plan(_tiny(methods="baseline_10pct"), tmp_path)]
  assert names == ["check", "data", "train/baseline_10pct/r0", "train/baseline_10pct/r1", "report"]


def test_stage_selection_runs_only_what_is_asked_and_refuses_missing_inputs(tmp_path):
  lines = []
  with pytest.raises(RuntimeError, match=r"'train/baseline_10pct/r0' needs \['data'\]"):
    runner.run_study(_tiny(methods="baseline_10pct", stages="train/*"), tmp_path, log=lines.append)
  # A pattern that names no stage (a typo, or a method not selected) is refused before anything runs.
  with pytest.raises(ValueError, match=r"pattern\(s\) \['chek', 'train/simple_prompt/\*', 'augment/\*'\] match no stage"):
    runner.run_study(
      _tiny(methods="baseline_10pct", stages="chek,data", redo="train/simple_prompt/*", adopt="augment/*"),
      tmp_path,
      log=lines.append,
    )
  assert not (tmp_path / "stages").exists()
  lines.clear()
  runner.run_study(_tiny(methods="baseline_10pct", stages="check,data"), tmp_path, log=lines.append)
  assert (tmp_path / "data" / "splits" / "subset.jsonl").is_file()
  assert (tmp_path / "check" / "quarantine.jsonl").read_text() == ""  # the synthetic images all decode
  assert any("[3/5] train/baseline_10pct/r0: not selected" in line for line in lines)
  assert not (tmp_path / "report").exists()
  assert any(line.startswith("time per stage") for line in lines)


def test_exclusions_drop_a_class_from_splits_labels_and_resampled_sets(tmp_path):
  import numpy as np

  from jax_aug.data import subsets
  from jax_aug.data.augmentation_set import AugmentationSetWriter, item_key
  from jax_aug.study import wiring

  config = _tiny()
  wiring.check_data(config.data, tmp_path / "check", data_dir=tmp_path / "data")
  wiring.prepare_data(config.data, tmp_path / "data", check_dir=tmp_path / "check")
  all_wnids = wiring.study_data(tmp_path / "data", None).wnids
  excluded = all_wnids[1]
  exclusion = tmp_path / "retrieval" / "excluded_classes.json"
  subsets.write_exclusions(exclusion, {excluded: "retrieval found 3 of 12 images"})
  data = wiring.study_data(tmp_path / "data", exclusion)
  assert data.wnids == [w for w in all_wnids if w != excluded]
  for split in ("subset", "validation", "test"):
    assert {r["wnid"] for r in data.split(split)} == set(data.wnids)
  assert wiring.read_exclusions(exclusion) == [{"wnid": excluded, "reason": "retrieval found 3 of 12 images"}]

  writer = AugmentationSetWriter(tmp_path / "aug", "simple_prompt")
  for wnid in all_wnids:
    for i in range(12):
      writer.add(np.full((8, 8, 3), i, np.uint8), {"wnid": wnid, "key": item_key(wnid, i)})
  sets = wiring.resample_sets(
    tmp_path / "aug", tmp_path / "resample", data_dir=tmp_path / "data", exclusion=exclusion, n_sets=2, seed=0
  )
  expected = subsets.per_class_counts(data.split("subset"))
  for path in sets:
    drawn = subsets.read_manifest(path)
    assert subsets.per_class_counts(drawn) == expected and excluded not in expected

  # Exclusions that leave one class are refused by name (a one-class classifier scores 100%).
  subsets.write_exclusions(exclusion, {w: "retrieval found 3 of 12 images" for w in all_wnids[1:]})
  with pytest.raises(ValueError, match=rf"keeps 1 of its {len(all_wnids)} classes: retrieval excluded {len(all_wnids) - 1}"):
    _ = wiring.study_data(tmp_path / "data", exclusion).wnids
  # A dataset of one class with nothing excluded is refused the same way (not a StopIteration from the message).
  info = json.loads((tmp_path / "data" / "splits" / "info.json").read_text())
  (tmp_path / "data" / "splits" / "info.json").write_text(json.dumps({**info, "wnids": all_wnids[:1]}))
  with pytest.raises(ValueError, match=r"keeps 1 of its 1 classes \(.*info\.json\), and a classifier needs at least 2"):
    _ = wiring.study_data(tmp_path / "data", None).wnids


def test_cpu_devices_split_the_cpu_before_jax_starts(tmp_path):
  """config.cpu_devices in a fresh process (run_study.py): the study's JAX has that many CPU devices."""
  proc = subprocess.run(
    [
      sys.executable,
      "run_study.py",
      "--config=configs/tiny.py",
      f"--workdir={tmp_path / 'study'}",
      "--config.methods=baseline_10pct",
      "--config.stages=check,data",
      "--config.cpu_devices=3",
    ],
    cwd=REPO_ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "config.cpu_devices=3: the CPU is split into 3 XLA devices" in proc.stdout
  # In a process whose JAX already runs (this one), the setting cannot apply: the study says so and goes on.
  import jax

  lines = []
  runner.split_cpu(len(jax.devices("cpu")) + 1, lines.append)
  assert lines == [
    f"config.cpu_devices={len(jax.devices('cpu')) + 1}: JAX started in this process before the study, with"
    f" {len(jax.devices('cpu'))} CPU device(s); the study runs on those"
  ]
  with pytest.raises(ValueError, match=r"config.cpu_devices=-2: expected 0 \(JAX's default\) or a number of devices"):
    runner.split_cpu(-2, lines.append)
