"""Stage `vae`: diffusers' FlaxAutoencoderKL at the world's size (3 levels: 32 px -> 8 x 8 x 4 latents),
trained on corpus images with L1 reconstruction + `kl_weight` x KL (SD's VAE adds LPIPS and a GAN; at
32 px the L1 term alone reconstructs the drawings).

The exported config carries `scaling_factor` = 1 / std of the latents over held-out corpus images, SD's
convention (SD v1.4's 0.18215 was chosen the same way), so the U-Net sees unit-variance latents.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_aug.mini_world import models
from jax_aug.mini_world.stage_loop import Stage
from jax_aug.mini_world.train_clip import augment

HOLDOUT = 512  # the last corpus items: evaluation and the scaling factor, never trained on


def to_vae_input(images) -> jax.Array:
  """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] in [-1, 1] (diffusers' Flax VAE takes channels first)."""
  return jnp.transpose(images.astype(jnp.float32) / 127.5 - 1.0, (0, 3, 1, 2))


def build_vae():
  from diffusers import FlaxAutoencoderKL

  return FlaxAutoencoderKL(**models.VAE)


def vae_losses(vae, params, images: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(L1 of the reconstruction in [-1, 1] units, mean KL per image, reconstruction [B, 3, H, W])."""
  x = to_vae_input(images)
  posterior = vae.apply({"params": params}, x, method=vae.encode).latent_dist
  z = posterior.mean + posterior.std * eps
  recon = vae.apply({"params": params}, z, method=vae.decode).sample
  return jnp.mean(jnp.abs(recon - x)), jnp.mean(posterior.kl()), recon


def vae_stage(config, corpus, seed: int) -> tuple[Stage, object]:
  vae = build_vae()
  train_size = len(corpus) - HOLDOUT
  latent = (models.LATENT_SIZE, models.LATENT_SIZE, models.VAE["latent_channels"])
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.lr, min(config.warmup, config.steps // 2), config.steps)
  tx = optax.adamw(schedule, weight_decay=0.0)

  def init():
    params = vae.init_weights(jax.random.key(seed))
    return {"params": params, "opt_state": tx.init(params)}

  @jax.jit
  def step(state, batch, key):
    eps = jax.random.normal(key, (batch["images"].shape[0], *latent))

    def loss_fn(params):
      l1, kl, _ = vae_losses(vae, params, batch["images"], eps)
      return l1 + config.kl_weight * kl, (l1, kl)

    (loss, (l1, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, {
      "loss": loss,
      "l1": l1,
      "kl": kl,
    }

  holdout = corpus.images[train_size:]

  @jax.jit
  def holdout_l1(params, images):
    l1, _, _ = vae_losses(vae, params, images, jnp.zeros((images.shape[0], *latent)))
    return l1

  def batch(step_index):
    rng = np.random.default_rng([seed, 2, step_index])
    chosen = np.sort(rng.choice(train_size, config.batch_size, replace=False))
    return {"images": augment(corpus.images[chosen], rng, 0)}

  def evaluate(state):
    l1 = float(holdout_l1(state["params"], holdout))
    return {"holdout_l1": l1, "holdout_l1_255": l1 * 127.5}  # also in pixel units (0..255)

  return Stage.configured("vae", config, init=init, step=step, batch=batch, evaluate=evaluate), vae


def scaling_factor(vae, params, images: np.ndarray) -> float:
  """1 / std of the posterior-mean latents of `images`."""
  moments = vae.apply({"params": params}, to_vae_input(jnp.asarray(images)), method=vae.encode).latent_dist.mean
  return float(1.0 / np.std(np.asarray(moments)))
