"""The latent-diffusion training objective of Stable Diffusion (Rombach et al., 2022), pure.

loss = E_{x, eps, t} || eps - eps_theta(sqrt(abar_t) z + sqrt(1 - abar_t) eps, t, c) ||^2,
z = scaling_factor * (mu(x) + sigma(x) * eps_vae)   (the VAE posterior sampled once per image),
t uniform over the scheduler's training timesteps, abar_t from SD's training noise schedule
(scaled_linear betas 0.00085..0.012 over 1000 steps). All randomness comes in as arrays, so the
same call gives the same loss, and tests feed the PyTorch reference identical noise.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def alphas_cumprod(
  *,
  num_train_timesteps: int = 1000,
  beta_start: float = 0.00085,
  beta_end: float = 0.012,
  beta_schedule: str = "scaled_linear",
) -> np.ndarray:
  """abar_t = prod_{s<=t} (1 - beta_s) of a DDPM noise schedule, float32 [num_train_timesteps]."""
  if beta_schedule == "scaled_linear":
    betas = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float32) ** 2
  elif beta_schedule == "linear":
    betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float32)
  else:
    raise ValueError(f"unsupported beta_schedule {beta_schedule!r}; expected 'scaled_linear' or 'linear'")
  return np.cumprod(1.0 - betas, dtype=np.float32)


def schedule_from_scheduler_config(config: Any) -> np.ndarray:
  """The training noise schedule named by a diffusers scheduler config (SD ships PNDM's config with
  the same betas that DDPM trained with)."""
  if config.get("trained_betas") is not None:
    raise ValueError("schedulers with explicit trained_betas are not supported by the fine-tuning loss")
  return alphas_cumprod(
    num_train_timesteps=config["num_train_timesteps"],
    beta_start=config["beta_start"],
    beta_end=config["beta_end"],
    beta_schedule=config["beta_schedule"],
  )


def add_noise(abar: jax.Array, latents: jax.Array, noise: jax.Array, timesteps: jax.Array) -> jax.Array:
  """Forward diffusion q(z_t | z_0) at integer timesteps, per example (DDPMScheduler.add_noise)."""
  a = abar[timesteps].astype(latents.dtype).reshape((-1,) + (1,) * (latents.ndim - 1))
  return jnp.sqrt(a) * latents + jnp.sqrt(1.0 - a) * noise


def encode_latents(vae: Any, vae_params: Any, images: jax.Array, latent_eps: jax.Array, scaling_factor: float) -> jax.Array:
  """Images [B, 3, H, W] in [-1, 1] -> scaled latents [B, 4, H/f, W/f], one posterior sample each.

  `latent_eps` is the standard normal draw of the posterior sample, channels-last [B, H/f, W/f, 4] as
  diffusers' Flax VAE keeps its moments. The VAE is frozen in every method, hence stop_gradient."""
  posterior = vae.apply({"params": vae_params}, images, method=vae.encode).latent_dist
  latents = posterior.mean + posterior.std * latent_eps.astype(posterior.mean.dtype)
  return jax.lax.stop_gradient(jnp.transpose(latents, (0, 3, 1, 2)) * scaling_factor)


def draw_noise(
  key: jax.Array, batch: int, latent_shape: tuple[int, int, int], num_train_timesteps: int
) -> dict[str, jax.Array]:
  """The random inputs of one loss evaluation: posterior eps (channels-last), diffusion noise
  (channels-first, as the U-Net sees latents) and uniform integer timesteps in [0, T)."""
  c, h, w = latent_shape
  k_vae, k_noise, k_t = jax.random.split(key, 3)
  return {
    "latent_eps": jax.random.normal(k_vae, (batch, h, w, c)),
    "noise": jax.random.normal(k_noise, (batch, c, h, w)),
    "timesteps": jax.random.randint(k_t, (batch,), 0, num_train_timesteps),
  }
