"""Inception-v3 in Flax (pool features, 2048-d) with a weight port from torchvision's `inception_v3`.

Used for FT cluster conditioning: the paper clusters each class's images with k-means on Inception-v3
embeddings. Module and parameter names mirror torchvision's so that the port is a name-for-name copy.
Only the feature trunk is built: the auxiliary classifier and the final fc layer do not affect the
2048-d pool features and are skipped by the port.

Real weights come from a local file on the user's machine (torchvision's `inception_v3_google-*.pth`
read with `torch.load(weights_only=True)`, or the same state dict saved as .safetensors / .npz); never
pickle. torchvision's pretrained weights expect `transform_input=True` (ImageNet-normalized input
re-mapped to the [-1, 1] range Google trained with), which is our default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jax_aug.data.transforms import resize_center_crop

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
FEATURE_DIM = 2048
MIN_INPUT_SIZE = 75  # smaller inputs shrink to nothing before Mixed_7c (torchvision's limit as well)


class BasicConv2d(nn.Module):
  """conv (no bias) + BatchNorm(eps=1e-3) + ReLU, as torchvision's BasicConv2d."""

  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(
      self.features,
      self.kernel,
      (self.strides, self.strides),
      padding=[(p, p) for p in self.padding],
      use_bias=False,
      dtype=self.dtype,
      name="conv",
    )(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  # torchvision: F.avg_pool2d(x, 3, stride=1, padding=1), zero padding counted in the mean.
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=True)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class InceptionA(nn.Module):
  pool_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = lambda f, k, p=(0, 0), name=None: BasicConv2d(f, k, padding=p, dtype=self.dtype, name=name)
    b1 = c(64, (1, 1), name="branch1x1")(x)
    b5 = c(64, (5, 5), (2, 2), name="branch5x5_2")(c(48, (1, 1), name="branch5x5_1")(x))
    b3 = c(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = c(96, (3, 3), (1, 1), name="branch3x3dbl_2")(b3)
    b3 = c(96, (3, 3), (1, 1), name="branch3x3dbl_3")(b3)
    bp = c(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, (3, 3), strides=2, dtype=self.dtype, name="branch3x3")(x)
    bd = BasicConv2d(64, (1, 1), dtype=self.dtype, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), dtype=self.dtype, name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, (3, 3), strides=2, dtype=self.dtype, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], -1)


class InceptionC(nn.Module):
  channels_7x7: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    c = lambda f, k, p=(0, 0), name=None: BasicConv2d(f, k, padding=p, dtype=self.dtype, name=name)
    b1 = c(192, (1, 1), name="branch1x1")(x)
    b7 = c(c7, (1, 1), name="branch7x7_1")(x)
    b7 = c(c7, (1, 7), (0, 3), name="branch7x7_2")(b7)
    b7 = c(192, (7, 1), (3, 0), name="branch7x7_3")(b7)
    bd = c(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = c(c7, (7, 1), (3, 0), name="branch7x7dbl_2")(bd)
    bd = c(c7, (1, 7), (0, 3), name="branch7x7dbl_3")(bd)
    bd = c(c7, (7, 1), (3, 0), name="branch7x7dbl_4")(bd)
    bd = c(192, (1, 7), (0, 3), name="branch7x7dbl_5")(bd)
    bp = c(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = lambda f, k, s=1, p=(0, 0), name=None: BasicConv2d(f, k, s, p, dtype=self.dtype, name=name)
    b3 = c(320, (3, 3), 2, name="branch3x3_2")(c(192, (1, 1), name="branch3x3_1")(x))
    b7 = c(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = c(192, (1, 7), 1, (0, 3), name="branch7x7x3_2")(b7)
    b7 = c(192, (7, 1), 1, (3, 0), name="branch7x7x3_3")(b7)
    b7 = c(192, (3, 3), 2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], -1)


class InceptionE(nn.Module):
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = lambda f, k, p=(0, 0), name=None: BasicConv2d(f, k, padding=p, dtype=self.dtype, name=name)
    b1 = c(320, (1, 1), name="branch1x1")(x)
    b3 = c(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate(
      [c(384, (1, 3), (0, 1), name="branch3x3_2a")(b3), c(384, (3, 1), (1, 0), name="branch3x3_2b")(b3)], -1
    )
    bd = c(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = c(384, (3, 3), (1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate(
      [c(384, (1, 3), (0, 1), name="branch3x3dbl_3a")(bd), c(384, (3, 1), (1, 0), name="branch3x3dbl_3b")(bd)], -1
    )
    bp = c(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b3, bd, bp], -1)


class InceptionV3Features(nn.Module):
  """Images [B, H, W, 3] (ImageNet-normalized, H, W >= 75) -> pool features [B, 2048]."""

  transform_input: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if min(x.shape[1:3]) < MIN_INPUT_SIZE:
      raise ValueError(
        f"Inception-v3 needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} px, got {x.shape[1]}x{x.shape[2]}"
      )
    if self.transform_input:
      x = x * (IMAGENET_STD / 0.5) + (IMAGENET_MEAN - 0.5) / 0.5
    d = self.dtype
    x = BasicConv2d(32, (3, 3), strides=2, dtype=d, name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, (3, 3), dtype=d, name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), dtype=d, name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = BasicConv2d(80, (1, 1), dtype=d, name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), dtype=d, name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, d, name="Mixed_5b")(x)
    x = InceptionA(64, d, name="Mixed_5c")(x)
    x = InceptionA(64, d, name="Mixed_5d")(x)
    x = InceptionB(d, name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, d, name=name)(x)
    x = InceptionD(d, name="Mixed_7a")(x)
    x = InceptionE(d, name="Mixed_7b")(x)
    x = InceptionE(d, name="Mixed_7c")(x)
    return x.astype(jnp.float32).mean((1, 2))


# --- weight port ---------------------------------------------------------------------------------------

_SKIPPED = re.compile(r"^(AuxLogits\.|fc\.)|\.num_batches_tracked$")


def variables_from_torchvision(state_dict: Mapping[str, Any]) -> dict:
  """torchvision `inception_v3` state dict (tensors or arrays) -> Flax variables of InceptionV3Features.

  Raises KeyError naming any missing trunk parameter and ValueError for unexpected keys or shapes."""
  template = _expected_shapes()
  params: dict = {}
  batch_stats: dict = {}
  seen = set()
  for key, value in state_dict.items():
    if _SKIPPED.search(key):
      continue
    value = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, np.float32)
    *path, layer, leaf = key.split(".")
    if layer == "conv" and leaf == "weight":
      tree, name, value = params, "kernel", value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif layer == "bn" and leaf in ("weight", "bias"):
      tree, name = params, {"weight": "scale", "bias": "bias"}[leaf]
    elif layer == "bn" and leaf in ("running_mean", "running_var"):
      tree, name = batch_stats, {"running_mean": "mean", "running_var": "var"}[leaf]
    else:
      raise ValueError(f"unexpected key {key!r} in an Inception-v3 state dict")
    flat = (*path, layer, name)
    collection = "params" if tree is params else "batch_stats"
    if (collection, flat) not in template:
      raise ValueError(f"unexpected key {key!r} in an Inception-v3 state dict")
    if template[(collection, flat)] != value.shape:
      raise ValueError(
        f"{key}: shape {value.shape} does not match Inception-v3's {template[(collection, flat)]} (after OIHW->HWIO)"
      )
    node = tree
    for part in flat[:-1]:
      node = node.setdefault(part, {})
    node[flat[-1]] = value
    seen.add((collection, flat))
  missing = sorted(set(template) - seen)
  if missing:
    raise KeyError(
      f"Inception-v3 state dict lacks {len(missing)} trunk parameters, e.g. {'.'.join(missing[0][1])} ({missing[0][0]})"
    )
  return {"params": params, "batch_stats": batch_stats}


def _expected_shapes() -> dict:
  import jax

  shapes = jax.eval_shape(InceptionV3Features().init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
  flat = {}
  for collection, tree in shapes.items():
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      flat[(collection, tuple(p.key for p in path))] = tuple(leaf.shape)
  return flat


def load_torchvision_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a torchvision Inception-v3 state dict from .safetensors, .npz or .pth/.pt, without pickle."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"Inception-v3 weight file {path} does not exist")
  suffix = path.suffix.lower()
  if suffix == ".safetensors":
    from safetensors.numpy import load_file

    return load_file(str(path))
  if suffix == ".npz":
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  if suffix in (".pth", ".pt"):
    import torch  # only users converting torchvision's own file need torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in state.items()}
  raise ValueError(
    f"{path}: unsupported Inception-v3 weight format {suffix!r}; "
    "expected .safetensors, .npz or .pth/.pt (torchvision state dict)"
  )


def preprocess(image: Image.Image, size: int = 299) -> np.ndarray:
  """torchvision's Inception_V3_Weights transform: resize the short side to size*342/299 (bilinear),
  centre-crop size x size, scale to [0, 1], ImageNet-normalize. Returns float32 [size, size, 3]."""
  x = resize_center_crop(image, int(size * 342 / 299), size, Image.Resampling.BILINEAR) / np.float32(255.0)
  return (x - IMAGENET_MEAN) / IMAGENET_STD
