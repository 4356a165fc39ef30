"""Choices the study makes on validation: the learning-rate grid search (lowest validation loss), the
checkpoint and Boomerang-strength selection (best validation top-1), and the reuse of the chosen candidate's
classifier as the method's resample-0 run. The areas' jobs are replaced by hand-built stand-ins that write
what the real ones write (the fine-tuning progress record, augmentation sets, results.json), so the study's own logic runs
end to end in seconds; the real jobs run in tests/test_study_end_to_end.py."""

import json
from pathlib import Path

import numpy as np
import pytest

from jax_aug.data import subsets
from jax_aug.data.augmentation_set import AugmentationSetWriter, item_key
from jax_aug.finetune import lr_search
from jax_aug.finetune.checkpoint_policy import EpochLosses
from jax_aug.finetune.checkpoints import RunCheckpoints
from jax_aug.mini_world import recognition
from jax_aug.study import runner, wiring
from jax_aug.study import selection as selection_lib
from jax_aug.study.config_files import load_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_lr_search_picks_the_run_with_the_lowest_validation_loss_of_any_epoch():
  h = lambda *losses: [EpochLosses(e, 1.0, v) for e, v in enumerate(losses, start=1)]
  # lr0 ends lowest-but-one; lr1 reaches the lowest loss at epoch 2 and then rises; lr2 never gets there.
  runs = {"lr0": h(1.0, 0.8, 0.75), "lr1": h(0.9, 0.7, 0.95), "lr2": h(0.85, 0.8, 0.79)}
  assert lr_search.choose(runs) == "lr1"
  assert lr_search.choose({"a": h(0.5), "b": h(0.6, 0.5)}) == "a"  # ties: the first listed
  with pytest.raises(ValueError, match="no run to choose from"):
    lr_search.choose({})
  with pytest.raises(ValueError, match="without a finished epoch"):
    lr_search.choose({"a": []})


def test_lr_grid_run_config_scales_every_group_and_drops_the_grid():
  paper = load_module(CONFIGS / "paper.py").get_config()
  block = paper.method_configs.imagic.finetune
  assert len(block.lr_search.factors) >= 5  # the paper's "fine-grained grid-search", our 5 points
  run = lr_search.run_config(block, 2.0)
  assert "lr_search" not in run and "lr_search" in block
  for group in lr_search.GROUPS:
    assert run.base_learning_rate[group] == pytest.approx(2.0 * block.base_learning_rate[group])
    # sqrt(batch / base batch) scaling kept: 8 / 1 at paper scale.
    assert run.learning_rate[group] == pytest.approx(2.0 * block.base_learning_rate[group] * 8**0.5)
  with pytest.raises(ValueError, match="factors must be > 0, got 0"):
    lr_search.run_config(block, 0.0)


# Hand-built validation losses per grid point (key: the conditioning base rate, tiny 5e-2 x factor).
HISTORIES = {0.025: [1.0, 0.8, 0.9], 0.05: [0.95, 0.85, 0.7]}  # factor 1 wins: 0.7 < 0.8
INITIAL_VAL_LOSS = 1.1  # before any step (the trainer's progress record)
# Validation top-1 the stand-in classifier gives each candidate's samples.
CANDIDATE_TOP1 = {"epoch_1": 60.0, "epoch_2": 70.0, "strength_0.5": 55.0, "strength_0.75": 65.0}


def _write_set(out: Path, method: str, wnids, candidate: str) -> None:
  writer = AugmentationSetWriter(out, method)
  for wnid in wnids:
    for i in range(12):
      if not writer.has(item_key(wnid, i)):
        writer.add(np.full((8, 8, 3), i, np.uint8), {"wnid": wnid, "key": item_key(wnid, i), "candidate": candidate})


@pytest.fixture()
def stand_ins(monkeypatch):
  calls = {"train_classifier": [], "finetune_checkpoints": []}

  def finetune(rc, out, *, data_dir, models_dir):
    history = HISTORIES[round(rc.finetune.base_learning_rate.conditioning, 6)]
    checkpoints = RunCheckpoints(out)
    checkpoints.save_resume(
      len(history),
      None,
      {
        "history": [{"epoch": e, "train_loss": 1.0, "val_loss": v} for e, v in enumerate(history, start=1)],
        "initial_val_loss": INITIAL_VAL_LOSS,
      },
    )
    checkpoints.close()

  def finetune_checkpoints(finetune_dir):
    calls["finetune_checkpoints"].append(Path(finetune_dir).name)
    return {
      "epoch_1": {"path": str(Path(finetune_dir) / "epoch_1"), "roles": ["epoch_1"]},
      "epoch_2": {"path": str(Path(finetune_dir) / "epoch_2"), "roles": ["best_val", "epoch_2"]},
    }

  def sample_finetuned(mc, out, *, finetune_dir, checkpoint, data_dir, models_dir):
    _write_set(out, mc.method.name, wiring.study_data(data_dir, None).wnids, Path(checkpoint).name)

  def sample(mc, out, *, data_dir, models_dir):
    _write_set(out, mc.method.name, wiring.study_data(data_dir, None).wnids, f"strength_{mc.boomerang_strength:g}")

  def train_classifier(
    classifier_config, out, *, data_dir, exclusion, subset, augmentation, evaluate_on, seed, resample_index=-1
  ):
    calls["train_classifier"].append(str(out))
    wnids = wiring.study_data(data_dir, exclusion).wnids
    top1 = 50.0 + seed
    if augmentation is not None:
      top1 = CANDIDATE_TOP1[subsets.read_manifest(augmentation)[0]["candidate"]] + resample_index
    results = {
      "top1": top1 - 1.0,
      "validation_top1": top1,
      "per_class_top1": {w: top1 for w in wnids},
      "best_epoch": 1,
      "eval_split": evaluate_on,
      "seed": seed,
      "resample_index": resample_index,
    }
    path = wiring.classifier_results_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results))
    return results

  for name, fn in dict(
    finetune=finetune,
    finetune_checkpoints=finetune_checkpoints,
    sample=sample,
    sample_finetuned=sample_finetuned,
    train_classifier=train_classifier,
    build_tiny_models=lambda out, seeds: None,
  ).items():
    monkeypatch.setattr(wiring, name, fn)
  return calls


def test_grid_search_selection_and_reuse_train_one_classifier_fewer_per_method(stand_ins, tmp_path):
  config = load_module(CONFIGS / "tiny.py").get_config()
  config.methods = "baseline_10pct,boomerang,ft_conditioning"
  config.compilation_cache = False
  config.lock()  # as run_study.py's config_flags hands it over
  runner.run_study(config, tmp_path, log=lambda line: None)

  # Grid search: both tiny grid runs, the lowest validation loss wins, checkpoints come from the winner.
  search = json.loads((tmp_path / "lr_search" / "ft_conditioning" / "lr_search.json").read_text())
  assert search["chosen"] == "finetune/ft_conditioning/lr1"
  assert {n: r["factor"] for n, r in search["runs"].items()} == {
    "finetune/ft_conditioning/lr0": 0.5,
    "finetune/ft_conditioning/lr1": 1.0,
  }
  assert search["runs"]["finetune/ft_conditioning/lr0"]["best_validation_loss"] == pytest.approx(0.8)
  # The trained group's batch-scaled rate (tiny: 5e-2 x factor x sqrt(4 / 1)); untrained groups are not listed.
  assert search["runs"]["finetune/ft_conditioning/lr0"]["learning_rate"] == {"conditioning": pytest.approx(0.05)}
  assert stand_ins["finetune_checkpoints"] == ["lr1"]
  # The mini world's personalization bar reads the chosen run's initial and best validation loss from there.
  assert recognition.personalization_losses(tmp_path, "ft_conditioning") == {
    "run": "finetune/ft_conditioning/lr1",
    "initial": INITIAL_VAL_LOSS,
    "best": pytest.approx(0.7),
    "lowered": True,
  }

  # Selection by validation top-1: checkpoint epoch_2 (70 > 60), Boomerang strength 0.75 (65 > 55).
  selection = json.loads((tmp_path / "select" / "ft_conditioning" / "selection.json").read_text())
  assert selection["chosen"] == "epoch_2" and selection["validation_top1"] == {"epoch_1": 60.0, "epoch_2": 70.0}
  boomerang = json.loads((tmp_path / "select" / "boomerang" / "selection.json").read_text())
  assert boomerang["chosen"] == "strength_0.75" and boomerang["boomerang_strength"] == {
    "strength_0.5": 0.5,
    "strength_0.75": 0.75,
  }
  resampled = subsets.read_manifest(tmp_path / "resample" / "boomerang" / "set_1.jsonl")
  assert {r["candidate"] for r in resampled} == {"strength_0.75"}

  # Counted: 2 baseline runs, 2 candidates + r1 for each selecting method; r0 is the chosen candidate's.
  trained = stand_ins["train_classifier"]
  assert len(trained) == 2 + 2 * (2 + 1)
  for method, chosen in (("ft_conditioning", "epoch_2"), ("boomerang", "strength_0.75")):
    assert not any(f"train/{method}/r0" in t for t in trained)
    r0 = json.loads(wiring.classifier_results_path(tmp_path / "train" / method / "r0").read_text())
    source = tmp_path / "select" / method / "candidates" / chosen / "classifier" / "results.json"
    assert r0["reused_from"] == str(source.relative_to(tmp_path))
    assert {k: v for k, v in r0.items() if k != "reused_from"} == json.loads(source.read_text())
    assert r0["eval_split"] == "test" and r0["seed"] == config.seed and r0["resample_index"] == 0

  runs = json.loads((tmp_path / "report" / "runs.json").read_text())
  assert runs["lr_search"]["ft_conditioning"]["chosen"] == "finetune/ft_conditioning/lr1"
  markdown = (tmp_path / "report" / "report.md").read_text()
  assert "| FT conditioning | x1 |" in markdown and "## Protocol" in markdown
  assert "sampler: scheduler / steps / guidance | pndm / 4 / 7.5 | not given in the paper, our choice |" in markdown
  for name in ("figure1.png", "figure5.png", "lr_search.png"):
    assert (tmp_path / "report" / name).is_file()


def test_reuse_refuses_a_different_resampled_set(stand_ins, tmp_path):
  config = load_module(CONFIGS / "tiny.py").get_config()
  config.methods = "boomerang"
  config.compilation_cache = False
  config.stages = "check,data,models,select/*,resample/*"
  runner.run_study(config, tmp_path, log=lambda line: None)
  set0 = tmp_path / "resample" / "boomerang" / "set_0.jsonl"
  lines = set0.read_text().splitlines()
  set0.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # same images, another order: not the same run
  with pytest.raises(RuntimeError, match="resampled set 0 .* differs from the one the selection trained on"):
    selection_lib.reuse_selection_classifier("boomerang", 0, config, tmp_path, tmp_path / "train" / "boomerang" / "r0")


def test_twin_of_a_reused_run_reruns_the_selection_classifier_that_trained(tmp_path, monkeypatch):
  """train/<m>/r0 of a fine-tuned method holds only results copied from its selection classifier: the
  PyTorch twin must rerun that classifier's recorded config, not look for a run in r0."""
  candidate = tmp_path / "select" / "m" / "candidates" / "epoch_1"
  selection_results = wiring.classifier_results_path(candidate)
  selection_results.parent.mkdir(parents=True)
  selection_results.write_text(json.dumps({"top1": 50.0}))
  r0 = wiring.classifier_results_path(tmp_path / "train" / "m" / "r0")
  r0.parent.mkdir(parents=True)
  r0.write_text(json.dumps({"top1": 50.0, "reused_from": str(selection_results.relative_to(tmp_path))}))
  baseline = wiring.classifier_results_path(tmp_path / "train" / "b" / "r0")
  baseline.parent.mkdir(parents=True)
  baseline.write_text(json.dumps({"top1": 40.0}))
  seen = []
  import jax_aug.twin.run

  monkeypatch.setattr(jax_aug.twin.run, "twin_of_run", lambda run_dir, out: seen.append(Path(run_dir)))
  wiring.train_twin(tmp_path / "train" / "m" / "r0", tmp_path / "twin" / "m", workdir=tmp_path)
  wiring.train_twin(tmp_path / "train" / "b" / "r0", tmp_path / "twin" / "b", workdir=tmp_path)
  assert seen == [selection_results.parent, baseline.parent]
