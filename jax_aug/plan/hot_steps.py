"""The study's hot steps at the config's real shapes, built from the production step functions.

Each builder returns `HotStep`s whose function is the very jitted step the trainer runs (built by the
trainer's own factory on a mesh of the target's devices), with ShapeDtypeStruct arguments laid out as the
trainer lays them out. Covered so far: the classifier's train and eval steps and each fine-tuning method's
train step. Not yet: sampling, Inception-v3 features, CLIP text query (docs/plan.md).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from jax_aug import sharding
from jax_aug.classifier import model as model_lib
from jax_aug.classifier import steps
from jax_aug.data.imagenet_classes import load_classes
from jax_aug.finetune import objective, pseudo_word, trainer
from jax_aug.finetune.methods import MethodSpec, initial_trainable
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
    # As jax_aug.data.pipeline yields them: uint8 images (normalised inside the step), int32 labels
    # (eval: a 0/1 mask).
    fields = {"image": jax.ShapeDtypeStruct((size_b, size, size, 3), jnp.uint8),
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


def finetune_step(config: ConfigDict, num_classes: int, target: Target, workdir: str | Path,
                  stage: str = "finetune") -> HotStep:
  """The train step of the method config `config` (configs/methods/<method>.py) as jax_aug.finetune.trainer
  builds it: its base SD from the trainer's loader (an empty model path builds the tiny SD into
  `workdir`), the method's trainable tree and AdamW, parameters replicated, the batch split."""
  sd, _ = trainer.load_model(config, Path(workdir))
  ft = config.finetune
  spec = MethodSpec.from_config(ft.trainables)
  mesh = sharding.make_mesh(target.devices)
  replicated, data = sharding.replicated_sharding(mesh), sharding.data_sharding(mesh)
  sharding.local_batch_size(ft.batch_size, mesh)  # the trainer's own refusal of an unsplittable batch
  # The trainable tree of one class from the production initializer; the plan only needs its shapes with
  # num_classes (x clusters) rows, which are identical per class.
  one = initial_trainable(spec, load_classes()[:1], text_encoder=sd.text_encoder,
                          text_params=sd.params["text_encoder"], tokenizer=sd.tokenizer, unet_params=sd.params["unet"])
  rows = num_classes * spec.clusters_per_class if spec.conditioning == "tensor" else num_classes
  trainable = {name: (jax.ShapeDtypeStruct((rows,) + tree.shape[1:], tree.dtype) if name != "unet" else
                      jax.eval_shape(lambda t: t, tree)) for name, tree in one.items()}
  frozen = {"vae": sd.params["vae"], "text_encoder": sd.params["text_encoder"]}
  if not spec.train_unet:
    frozen["unet"] = sd.params["unet"]
  text_module = None
  if spec.conditioning == "pseudo_word":
    text_module = pseudo_word.extended_text_encoder(sd.text_encoder, num_classes).module
  tx = trainer.make_optimizer(ft, trainable)
  abar = jnp.asarray(objective.schedule_from_scheduler_config(sd.scheduler.config))
  per_example_loss = trainer.make_loss_fn(spec, sd, text_module, abar, gradient_checkpointing=ft.gradient_checkpointing)
  train_step, _ = trainer.make_steps(per_example_loss, tx, mesh)
  b, r = ft.batch_size, sd.resolution
  # As jax_aug.finetune.data.BatchReader yields them.
  batch = {"image": jax.ShapeDtypeStruct((b, 3, r, r), jnp.float32), "index": jax.ShapeDtypeStruct((b,), jnp.int32),
           "weight": jax.ShapeDtypeStruct((b,), jnp.float32),
           "conditioning_index": jax.ShapeDtypeStruct((b,), jnp.int32)}
  if spec.conditioning == "pseudo_word":
    batch["input_ids"] = jax.ShapeDtypeStruct((b, sd.tokenizer.model_max_length), jnp.int32)
  args = (with_sharding(trainable, replicated), with_sharding(jax.eval_shape(tx.init, trainable), replicated),
          with_sharding(jax.eval_shape(lambda f: f, frozen), replicated), with_sharding(batch, data),
          with_sharding(jax.eval_shape(lambda: jax.random.key(0)), replicated))
  return HotStep(f"{stage}/train", train_step, args, f"train step, batch {b}, {r} px")
