"""FSDP-style state sharding (config.finetune.parameter_sharding, jax_aug/sharding.py) and per-block
rematerialization (config.finetune.gradient_checkpointing, jax_aug/finetune/remat.py) in the fine-tuning trainer.

Reference: the same run with the state replicated and no remat. On 4 forced CPU devices the production entry
(trainer.finetune) trains Imagic (conditioning tensor + U-Net, the production AdamW) for 2 steps with its
state replicated, and with it split over the data axis and every U-Net block rematerialized
("nothing_saveable"); the kept checkpoints, read back as export reads them (checkpoints.restore_trainable),
hold the same parameters up to float reduction order.

Tolerance (tests/test_finetune_parallel.py derives it): the split run sums the gradients in another order
(reduce-scatter instead of all-reduce, the clipping norm from per-shard partial sums), and Adam turns float
noise on an element whose gradient is about zero into up to a full learning-rate step of either sign. So:
every element within the Adam noise bound 2 * lr * sum_t C_t, and under 5% of the elements further apart
than 1e-3 of a learning-rate step. Negative control: a split run whose AdamW moments are lost before every
step (a realistic resharding bug) moves most elements by more than that.

A split run cut short and resumed is tested in tests/test_finetune_end_to_end.py (Imagic trains split there).
"""

import numpy as np
import pytest
from finetune_support import adam_step_bound, tiny_sd_path

N_STEPS = 2

PROGRAM = """
import jax, jax.numpy as jnp, numpy as np
from pathlib import Path
from flax.traverse_util import flatten_dict
jax.config.update("jax_compilation_cache_dir", str(Path(WORK) / "jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)  # the two split runs share their steps
from jax_aug.data import subsets
from jax_aug.finetune import checkpoints, trainer
from jax_aug.study.config_files import method_config

def config_for(parameter_sharding, gradient_checkpointing):
  config = method_config(Path("configs"), "imagic", "tiny")
  assert config.finetune.parameter_sharding == "fsdp"  # what the U-Net-training methods run with
  config.finetune.parameter_sharding = parameter_sharding
  config.finetune.gradient_checkpointing = gradient_checkpointing
  config.model.path = SD_PATH
  config.data.wnids = ("n01491361", "n01440764")
  config.data.synthetic.train_per_class = 40  # subset: 4 per class: 2 steps of batch 4 in the one epoch
  config.splits_dir = str(Path(WORK) / "data" / "splits")
  config.finetune.batch_size = 4  # one image per device
  config.finetune.policy.max_epochs = 1
  return config

subsets.prepare_splits(config_for("fsdp", "").data, Path(WORK) / "data")
original_setup = trainer.setup
split = {}
def recording_setup(config, workdir):
  run, state = original_setup(config, workdir)
  split[workdir.name] = [x.sharding.spec != jax.sharding.PartitionSpec() for x in jax.tree.leaves(state)]
  return run, state
trainer.setup = recording_setup

trainer.finetune(config_for("replicated", ""), Path(WORK) / "replicated")
trainer.finetune(config_for("fsdp", "nothing_saveable"), Path(WORK) / "fsdp")

# Negative control: the split run with its AdamW state back at step 0 before every step.
original_make_steps = trainer.make_steps
def forgetful_make_steps(*args):
  train_step, eval_sums = original_make_steps(*args)
  first = []
  def step(trainable, opt_state, *rest):
    if not first:
      first.append(jax.tree.map(jnp.copy, opt_state))
    return train_step(trainable, jax.tree.map(jnp.copy, first[0]), *rest)
  return step, eval_sums
trainer.make_steps = forgetful_make_steps
trainer.finetune(config_for("fsdp", "nothing_saveable"), Path(WORK) / "forgetful")

for name in ("replicated", "fsdp", "forgetful"):
  tree = checkpoints.restore_trainable(checkpoints.epoch_dir(Path(WORK) / name, 1))
  np.savez(Path(WORK) / f"{name}.npz", **{"/".join(k): np.asarray(v) for k, v in flatten_dict(tree).items()})
emit({"devices": jax.device_count(), "split": {k: [sum(v), len(v)] for k, v in split.items()},
      "learning_rate": config_for("fsdp", "").finetune.learning_rate.to_dict()})
"""


def _lr_steps(a, b, rates: dict) -> np.ndarray:
  """|a - b| of every element, in learning-rate steps of its group."""
  assert a.files == b.files
  return np.concatenate([np.abs(a[k] - b[k]).ravel() / rates[k.split("/")[0]] for k in a.files])


@pytest.mark.slow
def test_split_rematerialized_finetuning_gives_the_parameters_of_replicated_finetuning(run_jax, tmp_path):
  out = run_jax(f"SD_PATH = {str(tiny_sd_path())!r}\nWORK = {str(tmp_path)!r}\n" + PROGRAM, devices=4)
  assert out["devices"] == 4
  # Replicated: nothing split. FSDP: the U-Net's kernels and their two AdamW moments (biases and norms are
  # below FSDP_MIN_ELEMENTS, optax's counts are scalars).
  (none, leaves), (split, same_leaves) = out["split"]["replicated"], out["split"]["fsdp"]
  assert none == 0 and 0 < split < leaves == same_leaves and split % 3 == 0
  runs = {name: np.load(tmp_path / f"{name}.npz") for name in ("replicated", "fsdp", "forgetful")}
  rates = out["learning_rate"]
  noise_bound = 2 * sum(adam_step_bound(t) for t in range(1, N_STEPS + 1))
  diff = _lr_steps(runs["replicated"], runs["fsdp"], rates)
  bug = _lr_steps(runs["replicated"], runs["forgetful"], rates)
  print(
    f"replicated vs fsdp + remat: max {diff.max():.3g} lr, {(diff > 1e-3).mean():.2%} beyond 1e-3 lr; forgetful"
    f" AdamW: max {bug.max():.3g} lr, {(bug > 1e-3).mean():.2%} beyond 1e-3 lr (bound {noise_bound:.2f} lr)"
  )
  assert diff.max() <= noise_bound * (1 + 1e-5)
  assert (diff > 1e-3).mean() < 0.05
  # Negative control: losing AdamW's moments moves most elements by more than 1e-3 of a step.
  assert (bug > 1e-3).mean() > 0.5
