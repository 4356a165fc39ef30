"""The study's hot steps at the config's real shapes, built from the production step functions.

Each builder returns `HotStep`s whose function is the very jitted step the trainer runs (built by the
trainer's own factory on a mesh of the target's devices), with ShapeDtypeStruct arguments laid out as the
trainer lays them out. Covered so far: the classifier's train and eval steps. Not yet: fine-tuning,
sampling, Inception-v3 features, CLIP text query (docs/plan.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from jax_aug import sharding
from jax_aug.classifier import model as model_lib
from jax_aug.classifier import steps
from jax_aug.plan.compile import HotStep, with_sharding
from jax_aug.plan.targets import Target


def classifier_steps(config: ConfigDict, num_classes: int, target: Target, stage: str = "classifier") -> list[HotStep]:
  """Train and eval step of `config` (a configs/base/classifier.py block) for `num_classes` classes."""
  mesh = sharding.make_mesh(target.devices)
  model = model_lib.build_model(config.model, num_classes=num_classes)
  tx = steps.make_optimizer(config.optimizer)
  size = config.input.image_size
  layout = steps.state_shardings(model, tx, mesh, size, config.parameter_sharding)
  state = with_sharding(jax.eval_shape(lambda key: steps.create_train_state(model, tx, key, size),
                                       jax.random.key(0)), layout)
  data = sharding.data_sharding(mesh)
  for name in ("global_batch_size", "eval_batch_size"):
    if config[name] % mesh.size:
      raise ValueError(f"{stage}: config.{name}={config[name]} is not divisible by the {mesh.size} devices"
                       f" of {target.name}")

  def batch(size_b: int, mask: bool) -> dict:
    # As jax_aug.data.pipeline yields them: normalized float32 images, int32 labels (eval: a 0/1 mask).
    fields = {"image": jax.ShapeDtypeStruct((size_b, size, size, 3), jnp.float32),
              "label": jax.ShapeDtypeStruct((size_b,), jnp.int32)}
    if mask:
      fields["mask"] = jax.ShapeDtypeStruct((size_b,), jnp.int32)
    return with_sharding(fields, data)

  train = steps.jit_train_step(model, tx, mesh, layout)
  evaluate = steps.jit_eval_step(model, num_classes, mesh, layout)
  return [
      HotStep(f"{stage}/train", train, (state, batch(config.global_batch_size, False)),
              f"train step, batch {config.global_batch_size}"),
      HotStep(f"{stage}/eval", evaluate, (state.variables(), batch(config.eval_batch_size, True)),
              f"eval step, batch {config.eval_batch_size}"),
  ]
