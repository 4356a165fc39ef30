"""The one resize + centre crop of the project, bounded in memory whatever the aspect ratio.

`resize_center_crop(image, resize, crop, resample)` is torchvision's `Resize(resize, interpolation) +
CenterCrop(crop)` on a PIL image (shorter side to `resize`, longer side `int(resize * long / short)`,
crop offsets `int(round((side - crop) / 2))`). Used by the classifier's evaluation transform
(pipeline.eval_transform), the Inception-v3 features of cluster conditioning, the SD training images of
fine-tuning and Boomerang's init images; each caller adds only its own scaling of the values.

Bounded: torchvision resizes the whole image, then crops. A 100000 x 1 image resized to a shorter side
of 256 would be 25.6 M x 256 pixels (19.6 GB). Here, when the resized image would exceed
`MAX_RESIZED_ASPECT` x resize^2 pixels (an aspect ratio above 4:1), only the crop window is resampled:
Pillow's `resize(box=)` maps the window back onto the source, so the pixels materialized are the
source's, `crop x crop` of output and Pillow's one-pass intermediate (`crop` x the source rows under the
window). Pillow computes its filter coefficients relative to the box, so this path differs from the full
resize by rounding (1 level of 255 on about a quarter of the pixels, more where bicubic overshoots);
images up to 4:1, i.e. every ordinary photo, take torchvision's exact path (resize the whole image, then
crop), which costs at most 4 x resize^2 pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Aspect ratio up to which the whole image is resized (exactly torchvision's output).
MAX_RESIZED_ASPECT = 4


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
  """torchvision's Resize(int) output size (width, height): shorter side `resize`, aspect truncated."""
  if width <= height:
    return resize, int(resize * height / width)
  return int(resize * width / height), resize


def resize_center_crop(image: Image.Image, resize: int, crop: int, resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
  """uint8 [crop, crop, 3]: torchvision's Resize(resize, resample) + CenterCrop(crop) of an RGB image, in
  at most max(source, MAX_RESIZED_ASPECT x resize^2) pixels (see the module docstring)."""
  if crop > resize:
    raise ValueError(f"centre crop {crop} is larger than the resized shorter side {resize}")
  width, height = image.size
  new_width, new_height = resized_size(width, height, resize)
  top = int(round((new_height - crop) / 2.0))
  left = int(round((new_width - crop) / 2.0))
  image = image.convert("RGB")
  if new_width * new_height <= MAX_RESIZED_ASPECT * resize * resize:
    resized = image.resize((new_width, new_height), resample)
    return np.asarray(resized.crop((left, top, left + crop, top + crop)), np.uint8)
  sx, sy = width / new_width, height / new_height
  box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
  return np.asarray(image.resize((crop, crop), resample, box=box), np.uint8)


def vae_image(image: Image.Image, resolution: int) -> np.ndarray:
  """An image as SD's VAE takes it (fine-tuning examples, Boomerang's init images): Resize(resolution,
  bicubic) + CenterCrop(resolution), scaled to [-1, 1], float32 [3, resolution, resolution]."""
  pixels = resize_center_crop(image, resolution, resolution, Image.Resampling.BICUBIC)
  return (pixels.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)
