"""Weight port between a torchvision ResNet state_dict and Flax {"params", "batch_stats"}.

Pure array renaming/transposing on numpy: torchvision conv weights are [out, in, kh, kw] (Flax: [kh, kw,
in, out]), linear weights [out, in] (Flax: [in, out]); BN weight/bias/running_mean/running_var map to
scale/bias/mean/var. `num_batches_tracked` only matters to PyTorch BN without momentum (not ours).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

_BN_TO_FLAX = {
  "weight": ("params", "scale"),
  "bias": ("params", "bias"),
  "running_mean": ("batch_stats", "mean"),
  "running_var": ("batch_stats", "var"),
}
_BN_FROM_FLAX = {v: k for k, v in _BN_TO_FLAX.items()}


def _flax_module_path(torch_module: str) -> tuple[str, ...]:
  """'layer2.0.downsample.1' -> ('layer2_0', 'downsample_bn'); 'bn1' -> ('bn1',)."""
  m = re.fullmatch(r"(layer\d+)\.(\d+)\.(.+)", torch_module)
  if not m:
    return (torch_module,)
  block = f"{m[1]}_{m[2]}"
  inner = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(m[3], m[3])
  return (block, inner)


def _torch_module_name(flax_path: tuple[str, ...]) -> str:
  if len(flax_path) == 1:
    return flax_path[0]
  block, inner = flax_path
  layer, index = block.split("_")
  inner = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(inner, inner)
  return f"{layer}.{index}.{inner}"


def _is_bn(module_name: str) -> bool:
  return "bn" in module_name.split(".")[-1] or module_name.endswith("downsample.1")


def torch_to_flax(state_dict: Mapping[str, Any]) -> dict:
  """torchvision ResNet state_dict (tensors or arrays) -> {"params": ..., "batch_stats": ...} of numpy."""
  variables: dict = {"params": {}, "batch_stats": {}}
  for key, value in state_dict.items():
    module, _, leaf = key.rpartition(".")
    if leaf == "num_batches_tracked":
      continue
    array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    path = _flax_module_path(module)
    if module == "fc":
      collection, name, array = (
        "params",
        {"weight": "kernel", "bias": "bias"}[leaf],
        (array.T if leaf == "weight" else array),
      )
    elif _is_bn(module):
      if leaf not in _BN_TO_FLAX:
        raise KeyError(f"unexpected BatchNorm entry {key!r} in the torchvision state_dict")
      collection, name = _BN_TO_FLAX[leaf]
    elif leaf == "weight" and array.ndim == 4:
      collection, name, array = "params", "kernel", array.transpose(2, 3, 1, 0)
    else:
      raise KeyError(f"unexpected entry {key!r} (shape {array.shape}) in the torchvision state_dict")
    node = variables[collection]
    for part in path:
      node = node.setdefault(part, {})
    node[name] = np.array(array, dtype=np.float32)
  return variables


def flax_to_torch(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """{"params", "batch_stats"} -> torchvision state_dict of numpy arrays (wrap with torch.from_numpy).

  `num_batches_tracked` is set to 0: with a momentum (ours and torchvision's default) PyTorch never
  reads it.
  """
  state: dict[str, np.ndarray] = {}

  def walk(tree, path, collection):
    for name, value in tree.items():
      if isinstance(value, Mapping):
        walk(value, path + (name,), collection)
        continue
      array = np.asarray(value, dtype=np.float32)
      module = _torch_module_name(path)
      if module == "fc":
        state[f"fc.{ {'kernel': 'weight', 'bias': 'bias'}[name] }"] = array.T if name == "kernel" else array
      elif name == "kernel":
        state[f"{module}.weight"] = array.transpose(3, 2, 0, 1)
      elif (collection, name) in _BN_FROM_FLAX:
        state[f"{module}.{_BN_FROM_FLAX[(collection, name)]}"] = array
        state.setdefault(f"{module}.num_batches_tracked", np.zeros((), np.int64))
      else:
        raise KeyError(f"unexpected Flax variable {collection}/{'/'.join(path + (name,))}")

  walk(variables["params"], (), "params")
  walk(variables["batch_stats"], (), "batch_stats")
  return {k: np.ascontiguousarray(v) for k, v in state.items()}
