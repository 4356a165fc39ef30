"""Boomerang (Luzi et al. 2022): noise a subset image part-way along the forward diffusion, denoise it back.

This is img2img without prompt tuning: the denoising starts at step t_start of the scheduler's schedule,
from the encoded image noised to that step's level, exactly as diffusers' `StableDiffusionImg2ImgPipeline`
does (`strength` = fraction of the schedule that is re-run). Defaults and why: docs/diffusion.md.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def start_step(num_inference_steps: int, strength: float) -> int:
  """Index into the scheduler's timesteps where denoising starts (diffusers' img2img arithmetic)."""
  if not 0.0 < strength <= 1.0:
    raise ValueError(f"boomerang_strength must be in (0, 1], got {strength}")
  init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
  if init_timestep == 0:
    raise ValueError(f"boomerang_strength {strength} with {num_inference_steps} steps re-runs no step:"
                     " raise the strength or the step count")
  return max(num_inference_steps - init_timestep, 0)


def preprocess(image: Image.Image, resolution: int) -> np.ndarray:
  """An RGB image as the VAE expects it: shorter side resized to `resolution` (bicubic), centre crop,
  [3, H, W] float32 in [-1, 1]."""
  image = image.convert("RGB")
  w, h = image.size
  scale = resolution / min(w, h)
  image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))),
                       Image.Resampling.BICUBIC)
  w, h = image.size
  left, top = (w - resolution) // 2, (h - resolution) // 2
  image = image.crop((left, top, left + resolution, top + resolution))
  array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
  return array.transpose(2, 0, 1)
