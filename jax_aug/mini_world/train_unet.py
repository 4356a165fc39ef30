"""Stage `unet`: diffusers' FlaxUNet2DConditionModel (jax_aug/diffusion/tiny.py's shape, cross-attention
as wide as the tiny CLIP's text tower) trained from scratch on the corpus with SD's objective
(jax_aug.finetune.objective: one VAE posterior sample, SD v1.4's scaled-linear noise schedule, uniform
timesteps, epsilon MSE). Conditioning: the frozen tiny CLIP text encoder's last hidden states of the
caption padded to 77 tokens without attention mask, exactly as FlaxStableDiffusionPipeline encodes a
prompt; `uncond_p` of the captions are replaced by "" so classifier-free guidance has its unconditional
branch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_aug.diffusion.loading import CLIP_MAX_LENGTH
from jax_aug.diffusion.tiny import SD14_SCHEDULER_CONFIG
from jax_aug.finetune.objective import add_noise, draw_noise, encode_latents, schedule_from_scheduler_config
from jax_aug.mini_world import models
from jax_aug.mini_world.stage_loop import Stage
from jax_aug.mini_world.train_clip import augment
from jax_aug.mini_world.train_vae import HOLDOUT


def build_unet():
  from diffusers import FlaxUNet2DConditionModel

  return FlaxUNet2DConditionModel(**models.UNET)


def build_text_encoder():
  from transformers import CLIPTextConfig, FlaxCLIPTextModel

  return FlaxCLIPTextModel(CLIPTextConfig(**models.CLIP_TEXT), _do_init=False)


def unet_stage(
  config, corpus, tokenizer, *, vae, vae_params, scaling: float, text_params, seed: int
) -> tuple[Stage, object]:
  unet = build_unet()
  text_encoder = build_text_encoder()
  ids, _ = corpus.tokens(tokenizer, CLIP_MAX_LENGTH, config.cache)
  empty = np.asarray(
    tokenizer([""], padding="max_length", max_length=CLIP_MAX_LENGTH, return_tensors="np")["input_ids"][0], np.int32
  )
  train_size = len(corpus) - HOLDOUT
  abar = jnp.asarray(schedule_from_scheduler_config(SD14_SCHEDULER_CONFIG))
  latent_shape = (models.VAE["latent_channels"], models.UNET["sample_size"], models.UNET["sample_size"])
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.lr, min(config.warmup, config.steps // 2), config.steps)
  tx = optax.adamw(schedule, weight_decay=1e-2)

  def init():
    params = unet.init_weights(jax.random.key(seed))
    return {"params": params, "opt_state": tx.init(params)}

  def loss_fn(params, images, token_ids, key):
    draws = draw_noise(key, images.shape[0], latent_shape, len(abar))
    latents = encode_latents(
      vae, vae_params, jnp.transpose(images.astype(jnp.float32) / 127.5 - 1.0, (0, 3, 1, 2)), draws["latent_eps"], scaling
    )
    states = jax.lax.stop_gradient(text_encoder(token_ids, params=text_params)[0])
    noisy = add_noise(abar, latents, draws["noise"], draws["timesteps"])
    prediction = unet.apply({"params": params}, noisy, draws["timesteps"], states).sample
    # The magnitudes of what feeds the loss, logged with it: where a run turns non-finite, its last metrics
    # line says which of the VAE latents, the text states or the U-Net's output went first.
    magnitudes = {
      "latent_absmax": jnp.max(jnp.abs(latents)),
      "text_state_absmax": jnp.max(jnp.abs(states)),
      "prediction_absmax": jnp.max(jnp.abs(prediction)),
    }
    return jnp.mean((prediction - draws["noise"]) ** 2), magnitudes

  @jax.jit
  def step(state, batch, key):
    (loss, magnitudes), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"], batch["images"], batch["ids"], key
    )
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **magnitudes}
    return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, metrics

  holdout = {"images": corpus.images[train_size : train_size + 256], "ids": ids[train_size : train_size + 256]}
  holdout_loss = jax.jit(lambda *args: loss_fn(*args)[0])

  def batch(step_index):
    rng = np.random.default_rng([seed, 3, step_index])
    chosen = np.sort(rng.choice(train_size, config.batch_size, replace=False))
    token_ids = ids[chosen].copy()
    token_ids[rng.uniform(size=len(chosen)) < config.uncond_p] = empty
    return {"images": augment(corpus.images[chosen], rng, 0), "ids": token_ids}

  def evaluate(state):
    # fixed noise and timesteps: comparable across evaluations
    return {"holdout_loss": float(holdout_loss(state["params"], holdout["images"], holdout["ids"], jax.random.key(seed)))}

  return Stage.configured("unet", config, init=init, step=step, batch=batch, evaluate=evaluate), unet
