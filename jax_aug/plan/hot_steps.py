"""The study's hot steps at the config's real shapes, built from the production step functions.

Each builder returns `HotStep`s whose function is the very jitted step the trainer runs (built by the
trainer's own factory on a mesh of the target's devices), with ShapeDtypeStruct arguments laid out as the
trainer lays them out: the classifier's train and eval steps, each fine-tuning method's train step, the
sampling engine's denoise-and-decode function (txt2img and img2img, its loop body declared with the
loop's trip count), FT cluster conditioning's Inception-v3 features and the retrieval's CLIP text query.
Models come as shapes only (jax_aug.plan.models): no weights are read.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from jax_aug import sharding
from jax_aug.classifier import model as model_lib
from jax_aug.classifier import steps
from jax_aug.data.imagenet_classes import load_classes
from jax_aug.diffusion import engine
from jax_aug.diffusion.run import settings_from_config
from jax_aug.finetune import clusters, inception, objective, trainer
from jax_aug.finetune.data import Example
from jax_aug.finetune.trainables import Trainables, frozen_params, initial_trainable
from jax_aug.plan import models
from jax_aug.plan.compile import HotStep, LoopBody
from jax_aug.plan.targets import Target
from jax_aug.retrieval import clip_model


def classifier_steps(config: ConfigDict, num_classes: int, target: Target, stage: str = "classifier") -> list[HotStep]:
  """Train and eval step of `config` (a configs/base/classifier.py block) for `num_classes` classes."""
  mesh = sharding.make_mesh(sharding.run_devices(config.num_devices, target.devices, field=f"{stage}: config.num_devices"))
  model = model_lib.build_model(config.model, num_classes=num_classes, num_devices=mesh.size)
  tx = steps.make_optimizer(config.optimizer)
  size = config.input.image_size
  layout = steps.state_shardings(model, tx, mesh, size, config.parameter_sharding)
  state = sharding.with_sharding(
    jax.eval_shape(lambda key: steps.create_train_state(model, tx, key, size), jax.random.key(0)), layout
  )
  data = sharding.data_sharding(mesh)
  for name in ("global_batch_size", "eval_batch_size"):
    if config[name] % mesh.size:
      raise ValueError(f"{stage}: config.{name}={config[name]} is not divisible by the {mesh.size} devices of {target.name}")

  def batch(size_b: int, mask: bool) -> dict:
    # As jax_aug.data.pipeline yields them: uint8 images (normalised inside the step), int32 labels
    # (eval: a 0/1 mask).
    fields = {
      "image": jax.ShapeDtypeStruct((size_b, size, size, 3), jnp.uint8),
      "label": jax.ShapeDtypeStruct((size_b,), jnp.int32),
    }
    if mask:
      fields["mask"] = jax.ShapeDtypeStruct((size_b,), jnp.int32)
    return sharding.with_sharding(fields, data)

  train = steps.jit_train_step(model, tx, mesh, layout)
  evaluate = steps.jit_eval_step(model, num_classes, mesh, layout)
  return [
    HotStep(
      f"{stage}/train",
      train,
      (state, batch(config.global_batch_size, False)),
      f"train step, batch {config.global_batch_size}",
    ),
    HotStep(
      f"{stage}/eval",
      evaluate,
      (state.variables(), batch(config.eval_batch_size, True)),
      f"eval step, batch {config.eval_batch_size}",
    ),
  ]


def finetune_step(config: ConfigDict, num_classes: int, target: Target, stage: str = "finetune") -> HotStep:
  """The train step of the method config `config` (configs/methods/<method>.py) as jax_aug.finetune.trainer
  builds it: its base SD's shapes (jax_aug.plan.models), the method's trainable tree and AdamW laid out by
  the trainer's own `state_shardings` (config.finetune.parameter_sharding), the frozen weights replicated, the
  batch split."""
  sd = models.stable_diffusion(config.model)
  ft = config.finetune
  spec = Trainables.from_config(ft.trainables)
  mesh = sharding.make_mesh(
    sharding.run_devices(ft.num_devices, target.devices, field=f"{stage}: config.finetune.num_devices")
  )
  replicated, data = sharding.replicated_sharding(mesh), sharding.data_sharding(mesh)
  sharding.local_batch_size(ft.batch_size, mesh)  # the trainer's own refusal of an unsplittable batch
  classes = load_classes()[:num_classes]
  conditioning = spec.build(classes, sd.tokenizer)
  # The trainable tree of one class from the production initializer; the plan only needs its shapes with
  # num_classes times that class's rows of the learned array, which are identical per class. The
  # initializer encodes a prompt with the text encoder: zeros stand in for its weights (SD v1.4's: 0.25 GB in
  # bfloat16), evaluated eagerly, while the U-Net's master copy stays a shape.
  text_params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), sd.params["text_encoder"])

  def initial(unet_params):
    with jax.ensure_compile_time_eval():
      with_weights = dataclasses.replace(sd, params={**sd.params, "text_encoder": text_params, "unet": unet_params})
      return initial_trainable(spec, spec.build(classes[:1], sd.tokenizer), with_weights)

  one = jax.eval_shape(initial, sd.params["unet"])
  learned = one[conditioning.group]
  trainable = {
    **one,
    conditioning.group: jax.ShapeDtypeStruct((num_classes * learned.shape[0],) + learned.shape[1:], learned.dtype),
  }
  frozen = frozen_params(spec, sd)
  tx = trainer.make_optimizer(ft, trainable)
  abar = jnp.asarray(objective.schedule_from_scheduler_config(sd.scheduler.config))
  per_example_loss = trainer.make_loss_fn(conditioning, sd, abar, gradient_checkpointing=ft.gradient_checkpointing)
  layout = trainer.state_shardings(trainable, tx, mesh, ft.parameter_sharding)
  train_step, _ = trainer.make_steps(per_example_loss, tx, mesh, layout)
  b, r = ft.batch_size, sd.resolution
  # As jax_aug.finetune.data.BatchReader yields them: image, index, weight and the conditioning kind's fields.
  fields = conditioning.batch_fields([Example("", i % num_classes, i, 0) for i in range(b)], epoch=1, seed=0)
  batch = {
    "image": jax.ShapeDtypeStruct((b, 3, r, r), jnp.float32),
    "index": jax.ShapeDtypeStruct((b,), jnp.int32),
    "weight": jax.ShapeDtypeStruct((b,), jnp.float32),
    **{name: jax.ShapeDtypeStruct(field.shape, field.dtype) for name, field in fields.items()},
  }
  state = sharding.with_sharding(jax.eval_shape(lambda t: trainer.initial_state(t, tx, layout), trainable), layout)
  args = (
    state.trainable,
    state.opt_state,
    sharding.with_sharding(jax.eval_shape(lambda f: f, frozen), replicated),
    sharding.with_sharding(batch, data),
    sharding.with_sharding(jax.eval_shape(lambda: jax.random.key(0)), replicated),
  )
  return HotStep(f"{stage}/train", train_step, args, f"train step, batch {b}, {r} px")


def host_mesh(target: Target) -> jax.sharding.Mesh:
  """The devices of one host: the sampling engine splits its batches over `jax.local_devices()`, and
  hosts take disjoint batches."""
  return sharding.make_mesh([d for d in target.devices if d.process_index == target.devices[0].process_index])


def sampling_step(config: ConfigDict, target: Target, stage: str = "sample/txt2img") -> HotStep:
  """The sampling engine's jitted denoise + decode (`Sampler._denoise`) for the sampling config `config`
  (configs/base/diffusion.py or a method config's top level): txt2img, or img2img when
  `config.boomerang_strength` > 0; on one host's devices as the engine places them (parameters replicated,
  the batch split). Its loop body (`Sampler._denoise_step`) is declared with the loop's trip count."""
  sd = models.stable_diffusion(config.model)
  mesh = host_mesh(target)
  b = config.batch_size
  if b % mesh.size:
    raise ValueError(
      f"the sampling engine refuses batch_size={b}: not a multiple of the {mesh.size} devices of one {target.name} host"
    )
  sampler = engine.Sampler(sd, settings_from_config(config), mesh)
  img2img = bool(sampler.settings.boomerang_strength)
  replicated, data = sharding.replicated_sharding(mesh), sharding.data_sharding(mesh)
  latent, size, hidden, length = sampler.latent_shape, sampler.resolution, sampler.hidden, sampler.max_length
  params = sharding.with_sharding(
    jax.eval_shape(lambda p: p, {**sd.params, "scheduler": sampler.scheduler_state}), replicated
  )
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  # As Sampler.generate passes them: float32 arrays with the data sharding (txt2img: 1x1x1 zeros for the
  # unused init images and posterior noise), the guidance scale a scalar.
  init, posterior = (f32(b, 3, size, size), f32(b, *latent)) if img2img else (f32(b, 1, 1, 1), f32(b, 1, 1, 1))
  args = (
    params,
    *sharding.with_sharding((f32(b, *latent), f32(b, length, hidden), f32(b, length, hidden)), data),
    sharding.with_sharding(f32(), replicated),
    *sharding.with_sharding((init, posterior), data),
  )
  # One iteration alone, with the loop's carry: latents and the scheduler state after set_timesteps.
  state = jax.eval_shape(
    lambda s: sampler.scheduler.set_timesteps(s, sampler.settings.num_inference_steps, (b,) + latent),
    sampler.scheduler_state,
  )
  body_args = (
    params,
    sharding.with_sharding(jax.ShapeDtypeStruct((2 * b, length, hidden), sd.unet.dtype), data),
    sharding.with_sharding(f32(), replicated),
    sharding.with_sharding(state.timesteps, replicated),
    sharding.with_sharding(jax.ShapeDtypeStruct((), jnp.int32), replicated),
    (sharding.with_sharding(f32(b, *latent), data), sharding.with_sharding(state, replicated)),
  )
  trips = sampler.loop_trip_count()
  unit = f"batch {b}, {size} px, {trips} steps" + (f", strength {sampler.settings.boomerang_strength:g}" if img2img else "")
  return HotStep(
    stage,
    sampler._denoise,
    args,
    unit,
    kwargs={"img2img": img2img},
    loops=(LoopBody("denoise step", jax.jit(sampler._denoise_step), body_args, trips),),
  )


def cluster_features_step(config: ConfigDict, target: Target) -> HotStep:
  """FT cluster conditioning's feature extractor for the clusters block `config` (configs/base/finetune.py), on
  one device as `clusters.cluster_features` calls it: Inception-v3 pool features (`clusters.inception_features`)
  of `batch_size` float32 images, or a CLIP's image embeddings (`clip_model._image_features`)."""
  device = jax.sharding.SingleDeviceSharding(target.devices[0])
  stage, b = clusters.features_stage(config), config.batch_size
  if config.features == "clip":
    model = models.clip(config.clip_model)
    size = model.model.config.vision_config.image_size
    pixels = jax.ShapeDtypeStruct((b, 3, size, size), jnp.float32)
    return HotStep(
      stage,
      clip_model._image_features,
      (model.model, *sharding.with_sharding((model.params, pixels), device)),
      f"image embeddings, batch {b}, {size} px",
    )
  size = config.image_size
  variables = jax.eval_shape(
    inception.InceptionV3Features().init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  )
  images = jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32)
  return HotStep(
    stage,
    clusters.inception_features,
    sharding.with_sharding((variables, images), device),
    f"features, batch {b}, {size} px",
  )


def clip_text_step(config: ConfigDict, target: Target, stage: str = "retrieval/clip_text_query") -> HotStep:
  """The retrieval's query embedding (`clip_model._text_features`, called by `embed_texts` with its default
  batch of 64 prompts of 77 tokens) on one device, for the retrieval config `config`."""
  model = models.clip(config.clip.model, config.clip.tiny_image_size)
  device = jax.sharding.SingleDeviceSharding(target.devices[0])
  b = clip_model.EMBED_TEXTS_BATCH
  length = model.model.config.text_config.max_position_embeddings
  tokens = jax.ShapeDtypeStruct((b, length), jnp.int32)
  return HotStep(
    stage,
    clip_model._text_features,
    (model.model, *sharding.with_sharding((model.params, tokens, tokens), device)),
    f"query embedding, batch {b}",
  )
