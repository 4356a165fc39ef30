"""Shared by the fine-tuning tests: one tiny random SD per pytest process, saved as a PyTorch pipeline
(the reference) and loaded into Flax by diffusers' PT->Flax conversion, so every test that needs a model
pays for building it once."""

import functools
import tempfile
from pathlib import Path


@functools.cache
def tiny_sd():
  """(path of the PyTorch pipeline folder, the PyTorch pipeline, the Flax StableDiffusion)."""
  from jax_aug.diffusion import tiny
  from jax_aug.diffusion.loading import load_sd
  path = Path(tempfile.mkdtemp(prefix="jax_aug_finetune_tiny_sd_"))
  pipeline = tiny.build_tiny_sd_pt(path, seed=3)
  return path, pipeline, load_sd(path, from_pt=True)
