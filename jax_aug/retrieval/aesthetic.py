"""LAION's aesthetic predictor: a head on L2-normalized CLIP ViT-L/14 image embeddings.

Both released heads are stacks of `nn.Linear` layers without activations (v1 `sa_0_4_vit_l_14_linear`:
one Linear(768, 1); v2 "improved aesthetic predictor": Linear 768-1024-128-64-16-1 with dropout only), so
the head is applied as its Linear layers in order. Weights load from safetensors or npz (no pickle); a
PyTorch .pth converts once with `convert_pth(...)` (torch.load(weights_only=True)).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from jax_aug.io import atomic_write_bytes

_LAYER_RE = re.compile(r"^(?:(.*)\.)?(weight|bias)$")


class AestheticHead:
  """Scores [N] of embeddings [N, D]; `layers` is [(weight [out, in], bias [out]), ...] in order."""

  def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]]):
    if not layers:
      raise ValueError("aesthetic head has no layers")
    for (w, _), (w_next, _) in zip(layers, layers[1:]):
      if w_next.shape[1] != w.shape[0]:
        raise ValueError(f"aesthetic head layers do not chain: {w.shape} then {w_next.shape}")
    if layers[-1][0].shape[0] != 1:
      raise ValueError(f"aesthetic head must end in one output, got {layers[-1][0].shape[0]}")
    self.layers = layers

  @property
  def input_dim(self) -> int:
    return int(self.layers[0][0].shape[1])

  def __call__(self, embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2 or x.shape[1] != self.input_dim:
      raise ValueError(f"aesthetic head expects embeddings [N, {self.input_dim}], got {list(x.shape)}")
    for w, b in self.layers:
      x = x @ w.T.astype(np.float64) + b.astype(np.float64)
    return x[:, 0].astype(np.float32)


def _layers_from_tensors(tensors: dict[str, np.ndarray], source: str) -> list[tuple[np.ndarray, np.ndarray]]:
  prefixes: dict[str, dict[str, np.ndarray]] = {}
  for name, value in tensors.items():
    match = _LAYER_RE.match(name)
    if not match:
      raise ValueError(f"{source}: unexpected tensor {name!r}; expected '<layer>.weight' / '<layer>.bias'")
    prefixes.setdefault(match.group(1) or "", {})[match.group(2)] = np.asarray(value)

  def order(prefix: str):  # "layers.0" < "layers.2" < "layers.10": numeric parts compare as numbers
    return [int(p) if p.isdigit() else p for p in prefix.split(".")]

  layers = []
  for prefix in sorted(prefixes, key=order):
    parts = prefixes[prefix]
    if set(parts) != {"weight", "bias"} or parts["weight"].ndim != 2:
      raise ValueError(f"{source}: layer {prefix!r} must have a 2-D weight and a bias, got {sorted(parts)}")
    layers.append((parts["weight"], parts["bias"]))
  return layers


def load_aesthetic_head(path: str | os.PathLike) -> AestheticHead:
  """Loads a head from .safetensors or .npz (tensor names as in the PyTorch state dict)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"aesthetic predictor weights not found: {path}")
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
  elif path.suffix == ".npz":
    with np.load(path, allow_pickle=False) as data:
      tensors = {k: data[k] for k in data.files}
  else:
    raise ValueError(
      f"{path}: expected a .safetensors or .npz file (convert a .pth once with jax_aug.retrieval.aesthetic.convert_pth)"
    )
  return AestheticHead(_layers_from_tensors(tensors, str(path)))


def convert_pth(pth: str | os.PathLike, out: str | os.PathLike) -> Path:
  """One-off conversion of a PyTorch state dict (.pth) to safetensors, loading with weights_only=True
  so no pickled code runs."""
  import torch
  from safetensors.numpy import save

  state = torch.load(str(pth), map_location="cpu", weights_only=True)
  tensors = {k: v.detach().cpu().numpy() for k, v in state.items()}
  _layers_from_tensors(tensors, str(pth))  # refuse anything that is not a Linear stack before writing
  out = Path(out)
  atomic_write_bytes(out, save(tensors))
  return out
