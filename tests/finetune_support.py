"""Shared by the fine-tuning tests: one tiny random Flax SD per pytest process, saved in diffusers' layout
with Flax weights (seconds to build and load, unlike a PyTorch pipeline converted with from_pt), so every
test that needs a model pays for building it once. The loss-equivalence test builds its own PyTorch twin.
Also the bound on how far float noise can move a parameter under AdamW (the equivalence tests' tolerance)."""

import functools
import tempfile
from pathlib import Path

import numpy as np


@functools.cache
def tiny_sd_path() -> Path:
  """Folder of the tiny SD (subprocess tests load it from there)."""
  from jax_aug.diffusion import tiny

  return tiny.build_tiny_sd(Path(tempfile.mkdtemp(prefix="jax_aug_finetune_tiny_sd_")), seed=3)


@functools.cache
def tiny_sd():
  """The tiny SD of `tiny_sd_path()`, loaded in this process."""
  from jax_aug.diffusion.loading import load_sd

  return load_sd(tiny_sd_path())


B1, B2 = 0.9, 0.999  # configs/base/finetune.py's AdamW moments


def adam_step_bound(t: int, b1: float = B1, b2: float = B2) -> float:
  """Largest |m_hat_t / sqrt(v_hat_t)| over any gradient sequence (Cauchy-Schwarz on the moment sums)."""
  ratio = sum((b1 * b1 / b2) ** k for k in range(t))
  return (1 - b1) / (1 - b1**t) * np.sqrt((1 - b2**t) / (1 - b2)) * np.sqrt(ratio)
