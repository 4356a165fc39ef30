"""finetune_dm's trainer end to end on a tiny SD and a synthetic ImageNet: every method trains, keeps
its checkpoints, and its checkpoint samples an augmentation set with the sampling engine (one method
through the sample.py script, the others through the function it calls); a run cut short resumes to
exactly the result of an uninterrupted one (Imagic, its state split over the devices). All of it in one
subprocess, so the model loads and the train steps compile once per shape."""

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from finetune_support import tiny_sd_path

from jax_aug.data.augmentation_set import load_augmentation_set

PROGRAM = """
import jax, numpy as np
from pathlib import Path
jax.config.update("jax_compilation_cache_dir", str(Path(WORK) / "jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)  # the train steps, not every small op
from jax_aug.data.augmentation_set import load_augmentation_set
from jax_aug.finetune import trainer
from jax_aug.finetune.checkpoints import epoch_dir, read_progress, restore_trainable
from jax_aug.method_kinds import make_augmentation_set
from jax_aug.study.config_files import method_config

WNIDS = ("n01491361", "n01440764")

def config_for(method):
  config = method_config(Path("configs"), method, "tiny")
  config.model.path = SD_PATH
  config.data.wnids = WNIDS
  config.data.synthetic.train_per_class = 20  # subset: 2 per class, validation: 2 per class
  config.splits_dir = str(Path(WORK) / "data" / "splits")
  config.finetune.batch_size = 2
  config.finetune.policy.max_epochs = 2
  config.finetune.clusters.batch_size = 4
  if method == "ft_cluster_conditioning":
    config.finetune.trainables.clusters_per_class = 2  # k <= the 2 subset images of a class
  config.images_per_class, config.batch_size, config.num_inference_steps = 2, 2, 2
  config.safety_checker = False
  return config

from jax_aug.data import subsets
subsets.prepare_splits(config_for("ft_conditioning").data, Path(WORK) / "data")
result = {}
for method in METHODS:
  config = config_for(method)
  run = Path(WORK) / method
  progress = trainer.finetune(config, run)
  result[method] = {"history": progress["history"], "kept": progress["kept"], "stopped": progress["stopped"],
                    "checkpoints": sorted(p.name for p in (run / "checkpoints").iterdir()),
                    "resume": [sorted(p.name for p in step.iterdir()) for step in (run / "resume").iterdir()],
                    "metrics_lines": len((run / "metrics.jsonl").read_text().splitlines()),
                    "initial_val_loss": progress["initial_val_loss"]}
  if method != SCRIPT_METHOD:  # that one samples through sample.py, run by the test
    config.finetune.workdir = str(run)
    result[method]["rows"] = load_augmentation_set(make_augmentation_set(config, Path(WORK) / (method + "_samples")))

# The initial validation loss is the trainables' loss before any step: with a learning rate of 0 nothing moves,
# and epoch 1's validation loss (the same evaluation, the same noise) equals it exactly.
config = config_for("ft_conditioning")
config.finetune.learning_rate.conditioning = 0.0
config.finetune.policy.max_epochs = 1
still = trainer.finetune(config, Path(WORK) / "learning_rate_0")
result["learning_rate_0"] = {"initial": still["initial_val_loss"], "epoch_1": still["history"][0]["val_loss"]}

# Crash after 3 of the 4 steps (2 epochs x 2 steps), then run again: it resumes mid-epoch 2 (from the
# state checkpoint of step 3) to the same result as the uninterrupted run. Imagic: its U-Net state and AdamW
# moments are split over the 2 devices (parameter_sharding "fsdp"), saved split and restored split.
config = config_for("imagic")
assert config.finetune.parameter_sharding == "fsdp"
config.finetune.checkpoint_every_steps = 1
run = Path(WORK) / "interrupted"
original = trainer.BatchReader.batches
def crashing(self, order, epoch, start=0):
  for i, batch in enumerate(original(self, order, epoch, start)):
    if epoch == 2 and start + i == 1:
      raise KeyboardInterrupt("simulated crash")
    yield batch
trainer.BatchReader.batches = crashing
try:
  trainer.finetune(config, run)
except KeyboardInterrupt:
  pass
interrupted_history = read_progress(run)["history"]
resumed_from = []
def recording(self, order, epoch, start=0):
  resumed_from.append([epoch, start])
  return original(self, order, epoch, start)
trainer.BatchReader.batches = recording
original_restore, restored = trainer.restore, []
def recording_restore(run, initial):
  state, progress = original_restore(run, initial)
  pairs = list(zip(jax.tree.leaves(state), jax.tree.leaves(run.layout)))
  restored.append([sum(x.sharding.spec != jax.sharding.PartitionSpec() for x, _ in pairs),
                   all(x.sharding == layout for x, layout in pairs)])
  return state, progress
trainer.restore = recording_restore
progress = trainer.finetune(config, run)
trainer.BatchReader.batches, trainer.restore = original, original_restore
a, b = (restore_trainable(epoch_dir(w, 2)) for w in (Path(WORK) / "imagic", run))
same = all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
result["resume"] = {"history_before": interrupted_history, "history": progress["history"],
                    "resumed_from": resumed_from, "same_checkpoint": same, "restored": restored}
emit(result)
"""


METHODS = ["ft_conditioning", "ft_cluster_conditioning", "imagic", "textual_inversion", "pseudo_word_dm"]
SCRIPT_METHOD = "imagic"
SCRIPT_CHECKPOINT = "epoch_2"  # Imagic keeps only its epochs (paper Sec. 3.2), no best_val


def _sample_with_script(method, finetune_dir, out, *, sd_path, splits_dir):
  """sample.py on a fine-tuning run, with the subprocess program's sampling settings as flags."""
  command = [
    sys.executable,
    "sample.py",
    f"--config=configs/methods/{method}.py:tiny",
    f"--config.model.path={sd_path}",
    f"--config.finetune.workdir={finetune_dir}",
    f"--config.finetune.checkpoint={SCRIPT_CHECKPOINT}",
    f"--config.splits_dir={splits_dir}",
    "--config.images_per_class=2",
    "--config.batch_size=2",
    "--config.num_inference_steps=2",
    "--config.safety_checker=False",
    f"--workdir={out}",
  ]
  proc = subprocess.run(
    command, cwd=REPO_ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, f"sample.py failed (rc={proc.returncode}):\n{proc.stderr[-8000:]}"
  return load_augmentation_set(out)


def _check_method(r, method):
  assert [h["epoch"] for h in r["history"]] == [1, 2] and r["stopped"] == "max_epochs"
  if method == "imagic":
    assert set(r["kept"]) == {"epoch_1", "epoch_2"}
  else:
    assert set(r["kept"]) >= {"best_train", "best_val", "epoch_1", "epoch_2"}
  assert r["checkpoints"] == sorted(f"epoch_{e}" for e in set(r["kept"].values()))
  # One resume step left, holding the progress record and no longer the optimizer state.
  assert len(r["resume"]) == 1 and "progress" in r["resume"][0] and "state" not in r["resume"][0]
  assert r["metrics_lines"] == 2 * 2 + 2  # one per step, one per epoch
  assert r["initial_val_loss"] > 0 and r["initial_val_loss"] != r["history"][0]["val_loss"]  # training moved it
  # 2 images for each of the 2 classes, written by the sampling engine, provenance names the checkpoint.
  rows = r["rows"]
  assert sorted(row["wnid"] for row in rows) == ["n01440764"] * 2 + ["n01491361"] * 2
  provenance = {str(row.get("finetuned_checkpoint")) for row in rows}
  sampled = SCRIPT_CHECKPOINT if method == SCRIPT_METHOD else "epoch_" + str(r["kept"]["best_val"])
  assert len(provenance) == 1 and provenance.pop().endswith(sampled)
  return {str(row.get("cluster")) for row in rows}


@pytest.mark.slow
def test_every_method_trains_keeps_checkpoints_samples_and_resumes_identically(run_jax, tmp_path):
  sd_path = tiny_sd_path()
  code = f"SD_PATH = {str(sd_path)!r}\nWORK = {str(tmp_path)!r}\nMETHODS = {METHODS!r}\nSCRIPT_METHOD = {SCRIPT_METHOD!r}\n"
  result = run_jax(code + PROGRAM, devices=2, timeout=880)
  result[SCRIPT_METHOD]["rows"] = _sample_with_script(
    SCRIPT_METHOD,
    tmp_path / SCRIPT_METHOD,
    tmp_path / "script_samples",
    sd_path=sd_path,
    splits_dir=tmp_path / "data" / "splits",
  )
  for method in METHODS:
    clusters = _check_method(result[method], method)
    if method == "ft_cluster_conditioning":
      assert clusters <= {"0", "1"}  # each image names one of its class's 2 clusters
    elif method in ("textual_inversion", "pseudo_word_dm"):
      assert clusters == {"None"}  # prompts, no conditioning tensor
    else:
      assert clusters == {"0"}  # one conditioning tensor per class

  assert result["learning_rate_0"]["initial"] == result["learning_rate_0"]["epoch_1"]

  resume = result["resume"]
  assert [h["epoch"] for h in resume["history_before"]] == [1]
  assert resume["resumed_from"] == [[2, 1]]  # only the missing step of epoch 2 ran again
  assert resume["history"] == result["imagic"]["history"]
  assert resume["same_checkpoint"]  # the U-Net and the conditioning, bit for bit
  # Restored straight into the split layout (split leaves: the U-Net's kernels and their moments).
  ((split, same_layout),) = resume["restored"]
  assert split > 0 and same_layout
