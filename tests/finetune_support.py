"""Shared by the fine-tuning tests: one tiny random Flax SD per pytest process, saved in diffusers' layout
with Flax weights (seconds to build and load, unlike a PyTorch pipeline converted with from_pt), so every
test that needs a model pays for building it once. The loss-equivalence test builds its own PyTorch twin."""

import functools
import tempfile
from pathlib import Path


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
