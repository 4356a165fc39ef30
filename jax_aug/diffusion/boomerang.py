"""Boomerang (Luzi et al. 2022): noise a subset image part-way along the forward diffusion, denoise it back.

This is img2img without prompt tuning: the denoising starts at step t_start of the scheduler's schedule,
from the encoded image noised to that step's level, exactly as diffusers' `StableDiffusionImg2ImgPipeline`
does (`strength` = fraction of the schedule that is re-run). Defaults and why: docs/diffusion.md.
"""

from __future__ import annotations


def start_step(num_inference_steps: int, strength: float) -> int:
  """Index into the scheduler's timesteps where denoising starts (diffusers' img2img arithmetic)."""
  if not 0.0 < strength <= 1.0:
    raise ValueError(f"boomerang_strength must be in (0, 1], got {strength}")
  init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
  if init_timestep == 0:
    raise ValueError(
      f"boomerang_strength {strength} with {num_inference_steps} steps re-runs no step: raise the strength or the step count"
    )
  return max(num_inference_steps - init_timestep, 0)
