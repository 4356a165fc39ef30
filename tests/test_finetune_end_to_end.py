"""finetune_dm's trainer end to end on a tiny SD and a synthetic ImageNet: every method trains, keeps
its checkpoints, and its checkpoint samples an augmentation set with the sampling engine; a run cut
short resumes to exactly the result of an uninterrupted one."""

import pytest

from finetune_support import tiny_sd

PROGRAM = """
import jax, numpy as np
from pathlib import Path
jax.config.update("jax_compilation_cache_dir", str(Path(WORK) / "jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)  # the train steps, not every small op
from jax_aug.data.augmentation_set import load_augmentation_set
from jax_aug.finetune import trainer
from jax_aug.finetune.sampling import sample_finetuned
from jax_aug.finetune.export import load_personalized
from jax_aug.study.config_files import method_config

WNIDS = ("n01491361", "n01440764")

def config_for(method):
  config = method_config(Path("configs"), method, "tiny")
  config.model.path, config.model.from_pt = SD_PATH, True
  config.data.wnids = WNIDS
  config.data.synthetic.train_per_class = 20  # subset: 2 per class, validation: 2 per class
  config.splits_dir = str(Path(WORK) / "data" / "splits")
  config.finetune.batch_size = 2
  config.finetune.policy.max_epochs = 2
  config.finetune.clusters.batch_size = 4
  if method == "ft_cluster_conditioning":
    config.finetune.method.clusters_per_class = 2  # k <= the 2 subset images of a class
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
  config.finetune.workdir = str(run)
  samples = sample_finetuned(config, Path(WORK) / (method + "_samples"))
  rows = load_augmentation_set(samples)
  result[method] = {"history": progress["history"], "kept": progress["kept"], "stopped": progress["stopped"],
                    "checkpoints": sorted(p.name for p in (run / "checkpoints").iterdir()),
                    "rows": sorted((r["wnid"], r["path"]) for r in rows),
                    "provenance": sorted(set(str(r.get("finetuned_checkpoint")) for r in rows)),
                    "clusters": sorted(set(str(r.get("cluster")) for r in rows)),
                    "metrics_lines": len((run / "metrics.jsonl").read_text().splitlines())}

if RESUME:
  # Crash after 3 of the 4 steps (2 epochs x 2 steps), then run again: same result as uninterrupted.
  config = config_for("ft_conditioning")
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
  trainer.BatchReader.batches = original
  interrupted_history = [h for h in __import__("json").load(open(run / "progress.json"))["history"]]
  progress = trainer.finetune(config, run)
  a = load_personalized(Path(WORK) / "ft_conditioning", "epoch_2", sd=None).conditioning_table
  b = load_personalized(run, "epoch_2", sd=None).conditioning_table
  result["resume"] = {"history_before": interrupted_history, "history": progress["history"],
                      "same_checkpoint": bool(np.array_equal(a, b))}
emit(result)
"""


def _run(run_jax, tmp_path, methods, resume):
  path, _, _ = tiny_sd()
  code = f"SD_PATH = {str(path)!r}\nWORK = {str(tmp_path)!r}\nMETHODS = {methods!r}\nRESUME = {resume}\n"
  return run_jax(code + PROGRAM, devices=2, timeout=880)


def _check_method(result, method, *, clusters=False):
  r = result[method]
  assert [h["epoch"] for h in r["history"]] == [1, 2] and r["stopped"] == "max_epochs"
  assert set(r["kept"]) >= {"best_train", "best_val", "epoch_1", "epoch_2"}
  assert r["checkpoints"] == sorted(f"epoch_{e}" for e in set(r["kept"].values()))  # state_* removed
  assert r["metrics_lines"] == 2 * 2 + 2  # one per step, one per epoch
  # 2 images for each of the 2 classes, written by the sampling engine, provenance names the checkpoint.
  assert [w for w, _ in r["rows"]] == ["n01440764"] * 2 + ["n01491361"] * 2
  assert len(r["provenance"]) == 1 and r["provenance"][0].endswith("epoch_" + str(r["kept"]["best_val"]))
  if clusters:
    assert set(r["clusters"]) <= {"0", "1"} and r["clusters"] != ["None"]


@pytest.mark.slow
def test_ft_conditioning_trains_samples_and_resumes_identically(run_jax, tmp_path):
  result = _run(run_jax, tmp_path, ["ft_conditioning"], resume=True)
  _check_method(result, "ft_conditioning")
  resume = result["resume"]
  assert [h["epoch"] for h in resume["history_before"]] == [1]
  assert resume["history"] == result["ft_conditioning"]["history"]
  assert resume["same_checkpoint"]


# One subprocess per method keeps each test within the per-test timeout on a loaded 2-core machine.
@pytest.mark.slow
@pytest.mark.parametrize("method", ["ft_cluster_conditioning", "imagic", "textual_inversion", "pseudo_word_dm"])
def test_method_trains_keeps_checkpoints_and_samples(run_jax, tmp_path, method):
  result = _run(run_jax, tmp_path, [method], resume=False)
  _check_method(result, method, clusters=method == "ft_cluster_conditioning")
