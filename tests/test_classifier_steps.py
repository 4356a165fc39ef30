"""Small pure pieces of the trainer, against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from jax_aug.classifier import model as model_lib
from jax_aug.classifier import steps


class _FixedLogits:
  """Stands in for the model: returns the logits carried in the batch."""

  def apply(self, variables, images, train):
    del variables, train
    return images


def test_eval_step_counts_per_class_and_ignores_padding():
  logits = jnp.array([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])
  labels = jnp.array([0, 1, 0, 2, 2], jnp.int32)
  mask = jnp.array([1, 1, 1, 1, 0], bool)  # the last row is padding (its wrong answer must not count)
  out = steps.eval_step({}, {"image": logits, "label": labels, "mask": mask}, model=_FixedLogits(), num_classes=3)
  np.testing.assert_array_equal(out["correct"], [1, 1, 1])
  np.testing.assert_array_equal(out["count"], [2, 1, 1])


def _sgd_config(applies_to):
  return ConfigDict(
    dict(learning_rate=0.5, momentum=0.9, nesterov=False, weight_decay=0.1, weight_decay_applies_to=applies_to)
  )


def test_sgd_matches_hand_computed_torch_update_and_lr_can_change():
  # torch.optim.SGD: g' = g + wd p; buf = g' (first step), then buf = m buf + g'; p -= lr buf.
  params = {"conv": {"kernel": jnp.array([1.0, -2.0])}, "bn": {"bias": jnp.array([3.0])}}
  grads = {"conv": {"kernel": jnp.array([0.5, 0.5])}, "bn": {"bias": jnp.array([-1.0])}}
  tx = steps.make_optimizer(_sgd_config("all"))
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params))
  updates, opt_state = tx.update(grads, state.opt_state, params)
  p1 = optax.apply_updates(params, updates)
  np.testing.assert_allclose(p1["conv"]["kernel"], [1 - 0.5 * 0.6, -2 - 0.5 * 0.3], rtol=1e-6)
  np.testing.assert_allclose(p1["bn"]["bias"], [3 - 0.5 * (-0.7)], rtol=1e-6)
  state = steps.set_learning_rate(state.replace(params=p1, opt_state=opt_state), 0.05)
  assert steps.get_learning_rate(state) == pytest.approx(0.05)
  updates, _ = tx.update(grads, state.opt_state, p1)
  p2 = optax.apply_updates(p1, updates)
  buf = 0.9 * 0.6 + (0.5 + 0.1 * float(p1["conv"]["kernel"][0]))
  np.testing.assert_allclose(p2["conv"]["kernel"][0], float(p1["conv"]["kernel"][0]) - 0.05 * buf, rtol=1e-6)


def test_weight_decay_on_kernels_only_skips_biases_and_bn():
  params = {"conv": {"kernel": jnp.ones(2)}, "bn": {"scale": jnp.ones(1), "bias": jnp.ones(1)}}
  mask = steps.weight_decay_mask(params, "kernels")
  assert mask == {"conv": {"kernel": True}, "bn": {"scale": False, "bias": False}}
  with pytest.raises(ValueError, match="weight_decay_applies_to must be"):
    steps.weight_decay_mask(params, "bn")


def test_batchnorm_running_var_uses_the_unbiased_batch_variance():
  x = jnp.array([1.0, 2.0, 3.0, 6.0]).reshape(4, 1)  # mean 3, biased var 3.5, unbiased 14/3
  bn = model_lib.BatchNorm()
  variables = bn.init(jax.random.key(0), x, train=False)
  y, updated = bn.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(updated["batch_stats"]["mean"], [0.1 * 3.0], rtol=1e-6)
  np.testing.assert_allclose(updated["batch_stats"]["var"], [0.9 + 0.1 * 14 / 3], rtol=1e-6)
  np.testing.assert_allclose(y[:, 0], (x[:, 0] - 3.0) / np.sqrt(3.5 + 1e-5), rtol=1e-5)


def test_build_model_rejects_unknown_dtype():
  config = ConfigDict(dict(stage_sizes=(1,), num_filters=4, dtype="float16"))
  with pytest.raises(ValueError, match="model.dtype must be one of"):
    model_lib.build_model(config, num_classes=3)


def test_uint8_batches_are_normalised_on_the_device_as_torchvision_does():
  """The loaders send uint8; the jitted steps' model input is torchvision's ToTensor + Normalize."""
  from torchvision import transforms as T  # pylint: disable=g-import-not-at-top

  pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
  ours = np.asarray(jax.jit(steps.model_input)(pixels))
  tv = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
  theirs = np.stack([tv(p).permute(1, 2, 0).numpy() for p in pixels])
  np.testing.assert_allclose(ours, theirs, atol=1e-5)
  # Negative control: the pixels merely scaled to [0, 1] (a forgotten mean/std) are far off.
  assert np.abs(pixels / 255.0 - theirs).max() > 0.5
  # Float batches are taken as already normalised (what the PyTorch-equivalence tests feed).
  floats = theirs.astype(np.float32)
  np.testing.assert_array_equal(np.asarray(jax.jit(steps.model_input)(floats)), floats)
