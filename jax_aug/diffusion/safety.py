"""SD's safety checker on generated images (paper Sec. 3.2: flagged images are replaced by new samples)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np


def make_safety_fn(model) -> Callable[[np.ndarray], np.ndarray]:
  """uint8 images [B, H, W, 3] -> bool [B], True where SD's safety checker flags the image.

  Preprocessing is the checkpoint's own CLIP image processor (resize, centre crop, normalize), as in
  diffusers' pipelines. A model saved without a checker is refused: skipping it must be explicit."""
  if model.safety_checker is None or model.params.get("safety_checker") is None:
    raise ValueError(
      f"{model.checkpoint} has no safety checker; the paper discards flagged images, so"
      " pass an explicit safety_fn to sample without one"
    )
  checker = model.safety_checker

  @jax.jit
  def flags(params, pixel_values):
    return checker(pixel_values, params=params)

  def check(images: np.ndarray) -> np.ndarray:
    features = model.feature_extractor(list(images), return_tensors="np").pixel_values
    return np.asarray(flags(model.params["safety_checker"], features), dtype=bool)

  return check
