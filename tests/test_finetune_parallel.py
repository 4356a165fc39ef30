"""Data parallelism with the production optimizer (configs/base/finetune.py: AdamW b1 0.9, b2 0.999, eps 1e-8,
global-norm clipping 1.0): N = 3 train steps on 1 device and on 4 forced host devices (the batch split
over the data axis, gradients reduced across it).

The two differ only by float reduction order, and the tolerance is derived from what that does to Adam:
- Adam maps a perturbation d of a gradient g to about lr * d / |g| of update, so an element agrees to
  1e-3 of a learning-rate step unless its gradient passes near zero in one of the N steps (steps 2 and 3
  see parameters that already differ, and 1 and 4 devices run the convolutions at different per-device
  batch sizes). Measured: 1.5% of all elements (1.45% of those with a large step-1 gradient, above 1e-2
  of their tensor's largest) differ by more than 1e-3 lr; required: under 5% of each.
- Elements whose exact gradient is zero (e.g. a conv bias followed by GroupNorm, which cancels it) get
  float noise of either sign from either reduction order, and Adam (scale-invariant) turns noise into a
  full step: |m_hat / sqrt(v_hat)| <= C_t (Cauchy-Schwarz on Adam's moment sums), so after N steps the two
  runs differ there by at most 2 * lr * sum_t C_t: the bound every element must meet. The loss agrees to
  1e-5 relative.
"""

import numpy as np
import pytest
from finetune_support import B1, B2, adam_step_bound, tiny_sd_path

N_STEPS = 3
LARGE_GRADIENT = 1e-2  # of the tensor's largest gradient

STEPS = """
import jax, jax.numpy as jnp, numpy as np
from flax.traverse_util import flatten_dict
from jax_aug import sharding
from jax_aug.data.imagenet_classes import class_by_wnid
from jax_aug.diffusion.loading import load_sd
from jax_aug.finetune import objective
from jax_aug.finetune.trainables import Trainables, frozen_params, initial_trainable
from jax_aug.finetune.trainer import make_loss_fn, make_optimizer, make_steps
from configs.base import finetune as finetune_config

wnids = ["n01491361", "n01440764"]
sd = load_sd(SD_PATH)
spec = Trainables("tensor", 1, True)  # Imagic: conditioning gather and the U-Net in the step
conditioning = spec.build([class_by_wnid(w) for w in wnids], sd.tokenizer)
trainable = initial_trainable(spec, conditioning, sd)
frozen = frozen_params(spec, sd)
config = finetune_config.get("tiny")  # the production optimizer and learning rates, untouched
tx = make_optimizer(config, trainable)
mesh = sharding.make_mesh()
abar = jnp.asarray(objective.schedule_from_scheduler_config(sd.scheduler.config))
per_example_loss = make_loss_fn(conditioning, sd, abar)
train_step, _ = make_steps(per_example_loss, tx, mesh)
rng = np.random.default_rng(0)
batch = {"image": rng.uniform(-1, 1, (4, 3, sd.resolution, sd.resolution)).astype(np.float32),
         "index": np.arange(4, dtype=np.int32), "weight": np.ones(4, np.float32),
         "conditioning_index": np.array([0, 1, 0, 1], np.int32)}
if jax.device_count() == 1:  # the step-1 gradient, to tell real gradients from float noise
  grad = jax.jit(jax.grad(lambda t: per_example_loss(t, frozen, batch, jax.random.key(0)).mean()))(trainable)
  np.savez(OUT + "_grad.npz", **{"/".join(k): np.asarray(v) for k, v in flatten_dict(grad).items()})
trainable, opt_state, frozen = (sharding.replicate(t, mesh) for t in (trainable, tx.init(trainable), frozen))
batch = sharding.global_batch(batch, mesh)
assert batch["image"].sharding.spec[0] == sharding.DATA_AXIS
losses = []
for step in range(N_STEPS):
  trainable, opt_state, metrics = train_step(trainable, opt_state, frozen, batch, jax.random.key(step))
  losses.append(float(metrics["loss"]))
np.savez(OUT + ".npz", **{"/".join(k): np.asarray(v) for k, v in flatten_dict(trainable).items()})
emit({"devices": jax.device_count(), "losses": losses, "optimizer": config.optimizer.to_dict(),
      "learning_rate": config.learning_rate.to_dict()})
"""


def test_adam_step_bound_by_hand():
  assert adam_step_bound(1) == pytest.approx(1.0)  # step 1: g / |g|
  # Step 2, hand-computed: 0.1/0.19 * sqrt(0.001999/0.001) * sqrt(1 + 0.81/0.999) = 1.0018.
  assert adam_step_bound(2) == pytest.approx(0.1 / 0.19 * np.sqrt(1.999) * np.sqrt(1 + 0.81 / 0.999), rel=1e-9)
  # A constant gradient gives exactly 1, within the bound.
  g = np.array([1.0, 1.0, 1.0])
  m = (1 - B1) * sum(B1 ** (2 - i) * g[i] for i in range(3)) / (1 - B1**3)
  v = (1 - B2) * sum(B2 ** (2 - i) * g[i] ** 2 for i in range(3)) / (1 - B2**3)
  assert m / np.sqrt(v) <= adam_step_bound(3) + 1e-12


@pytest.mark.slow
def test_one_and_four_devices_agree_within_the_reduction_order_bound(run_jax, tmp_path):
  prefix = f"SD_PATH = {str(tiny_sd_path())!r}\nN_STEPS = {N_STEPS}\n"
  one = run_jax(prefix + f"OUT = {str(tmp_path / 'one')!r}\n" + STEPS, devices=1)
  four = run_jax(prefix + f"OUT = {str(tmp_path / 'four')!r}\n" + STEPS, devices=4)
  assert (one["devices"], four["devices"]) == (1, 4)
  # The production AdamW: the bound below is derived for these moments.
  assert one["optimizer"] == {"b1": B1, "b2": B2, "eps": 1e-8, "weight_decay": 0.0, "max_grad_norm": 1.0}
  rates = one["learning_rate"]
  np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)
  assert one["losses"][0] != one["losses"][-1]  # the steps moved the parameters

  a, b, grad = (np.load(tmp_path / f"{name}.npz") for name in ("one", "four", "one_grad"))
  noise_bound = 2 * sum(adam_step_bound(t) for t in range(1, N_STEPS + 1))
  total = loose = large = loose_large = 0
  for name in a.files:
    lr = rates[name.split("/")[0]]
    diff = np.abs(a[name] - b[name]) / lr  # in learning-rate steps
    g = np.abs(grad[name])
    is_large = g > LARGE_GRADIENT * g.max() if g.max() > 0 else np.zeros_like(g, bool)
    assert diff.max() <= noise_bound * (1 + 1e-5), (name, diff.max())
    total += diff.size
    loose += int((diff > 1e-3).sum())
    large += int(is_large.sum())
    loose_large += int((diff[is_large] > 1e-3).sum())
  print(
    f"beyond 1e-3 lr: {loose} of {total} elements, {loose_large} of {large} with a large step-1 gradient;"
    f" every element within the Adam bound {noise_bound:.2f} lr"
  )
  assert loose < 0.05 * total
  assert loose_large < 0.05 * large


HELD = """
import jax, numpy as np
from pathlib import Path
from flax.traverse_util import flatten_dict
from jax_aug import sharding
from jax_aug.data import subsets
from jax_aug.finetune import trainer
from jax_aug.finetune.checkpoints import epoch_dir, restore_trainable
from jax_aug.study.config_files import method_config

config = method_config(Path("configs"), "imagic", "tiny")  # the U-Net trains, its state "fsdp"-split
config.model.path = SD_PATH
config.data.wnids = ("n01491361", "n01440764")
config.data.synthetic.train_per_class = 40  # subset: 4 per class, one batch of 4 per epoch
config.splits_dir = str(Path(WORK) / "data" / "splits")
config.finetune.num_devices = NUM_DEVICES
subsets.prepare_splits(config.data, Path(WORK) / "data")
mesh_sizes = []
make_mesh = sharding.make_mesh
def recording(devices=None):
  mesh = make_mesh(devices)
  mesh_sizes.append(mesh.size)
  return mesh
sharding.make_mesh = recording
progress = trainer.finetune(config, Path(WORK) / "run")
last = epoch_dir(Path(WORK) / "run", config.finetune.policy.max_epochs)
np.savez(OUT, **{"/".join(k): np.asarray(v) for k, v in flatten_dict(restore_trainable(last)).items()})
emit({"devices": jax.device_count(), "mesh_sizes": mesh_sizes, "history": progress["history"],
      "learning_rate": config.finetune.learning_rate.to_dict(), "steps": config.finetune.policy.max_epochs})
"""


@pytest.mark.slow
def test_fine_tuning_held_to_one_of_four_devices_is_the_one_device_run(run_jax, tmp_path):
  """config.finetune.num_devices=1 in a process with 4 devices (the mini world's U-Net fine-tuning beside its
  2-device sampling) trains Imagic (U-Net and conditioning) on one device: the single-device process's run, its
  losses to 1e-6 and every parameter within the Adam float-noise bound (XLA's CPU threads are shared out by
  the process's device count, so the two need not agree to the bit)."""
  runs = {}
  for name, devices, held in (("one", 1, 0), ("one_of_four", 4, 1)):
    prefix = f"SD_PATH = {str(tiny_sd_path())!r}\nWORK = {str(tmp_path / name)!r}\nOUT = {str(tmp_path / name)!r} + '.npz'\n"
    runs[name] = run_jax(prefix + f"NUM_DEVICES = {held}\n" + HELD, devices=devices, timeout=600)
  one, held = runs["one"], runs["one_of_four"]
  assert (one["devices"], held["devices"]) == (1, 4)
  assert set(held["mesh_sizes"]) == {1}  # every mesh the run built (training, validation) spans one device
  assert [h["epoch"] for h in held["history"]] == [h["epoch"] for h in one["history"]] == [1, 2, 3]
  for key in ("train_loss", "val_loss"):
    np.testing.assert_allclose([h[key] for h in held["history"]], [h[key] for h in one["history"]], rtol=1e-6)
  a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "one_of_four.npz")
  assert a.files == b.files
  noise_bound = 2 * sum(adam_step_bound(t) for t in range(1, one["steps"] + 1))
  for name in a.files:
    diff = np.abs(a[name] - b[name]) / one["learning_rate"][name.split("/")[0]]  # in learning-rate steps
    assert diff.max() <= noise_bound, (name, diff.max())
