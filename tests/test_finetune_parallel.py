"""Data parallelism: one train step on 1 device and on 4 forced host devices gives the same updated
parameters (the batch is split over the data axis, gradients are reduced across it)."""

import numpy as np
import pytest

from finetune_support import tiny_sd_path

STEPS = """
import jax, jax.numpy as jnp, numpy as np
from jax_aug import sharding
from jax_aug.data.imagenet_classes import class_by_wnid
from jax_aug.diffusion.loading import load_sd
from jax_aug.finetune import objective
from jax_aug.finetune.methods import MethodSpec, initial_trainable
from jax_aug.finetune.trainer import make_loss_fn, make_optimizer, make_steps

class C(dict):
  __getattr__ = dict.__getitem__

wnids = ["n01491361", "n01440764"]
sd = load_sd(SD_PATH)
spec = MethodSpec("tensor", 1, True)  # Imagic: conditioning gather and the U-Net in the step
classes = [class_by_wnid(w) for w in wnids]
trainable = initial_trainable(spec, classes, text_encoder=sd.text_encoder, text_params=sd.params["text_encoder"],
                              tokenizer=sd.tokenizer, unet_params=sd.params["unet"])
frozen = {"vae": sd.params["vae"], "text_encoder": sd.params["text_encoder"]}
# Adam's eps = 1e-3: with the usual 1e-8, a weight whose gradient is float noise (~1e-9) takes a full
# lr-sized step whose sign depends on the reduction order, which differs between 1 and 4 devices.
config = C(learning_rate=C(conditioning=0.05, pseudo_words=0.05, unet=1e-3),
           optimizer=C(b1=0.9, b2=0.999, eps=1e-3, weight_decay=0.0, max_grad_norm=1.0))
tx = make_optimizer(config, trainable)
mesh = sharding.make_mesh()
abar = jnp.asarray(objective.schedule_from_scheduler_config(sd.scheduler.config))
train_step, _ = make_steps(make_loss_fn(spec, sd, None, abar), tx, mesh)
rng = np.random.default_rng(0)
batch = {"image": rng.uniform(-1, 1, (4, 3, sd.resolution, sd.resolution)).astype(np.float32),
         "index": np.arange(4, dtype=np.int32), "weight": np.ones(4, np.float32),
         "conditioning_index": np.array([0, 1, 0, 1], np.int32)}
trainable, opt_state, frozen = (sharding.replicate(t, mesh) for t in (trainable, tx.init(trainable), frozen))
batch = sharding.global_batch(batch, mesh)
assert batch["image"].sharding.spec[0] == sharding.DATA_AXIS
losses = []
for step in range(2):  # the second step's loss shows the first update took effect
  trainable, opt_state, loss = train_step(trainable, opt_state, frozen, batch, jax.random.key(step))
  losses.append(float(loss))
leaves = jax.tree.leaves(trainable["unet"])
emit({"devices": jax.device_count(), "losses": losses,
      "conditioning": np.asarray(trainable["conditioning"]).ravel()[::97].tolist(),
      "unet_sums": [float(np.asarray(x, np.float64).sum()) for x in leaves],
      "unet_first": np.asarray(leaves[0]).ravel()[:64].tolist()})
"""


@pytest.mark.slow
def test_one_and_four_devices_give_the_same_update(run_jax):
  code = f"SD_PATH = {str(tiny_sd_path())!r}\n" + STEPS
  one, four = run_jax(code, devices=1), run_jax(code, devices=4)
  assert (one["devices"], four["devices"]) == (1, 4)
  np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)
  # Float32 reductions in a different order: agreement to ~1e-5 of the values' scale.
  np.testing.assert_allclose(four["conditioning"], one["conditioning"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(four["unet_first"], one["unet_first"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(four["unet_sums"], one["unet_sums"], rtol=1e-4, atol=1e-5)
  # And the step did move the parameters (otherwise equality would prove nothing).
  assert one["losses"][0] != one["losses"][1]
