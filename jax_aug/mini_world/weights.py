"""Parameter trees <-> safetensors files (flat '/'-joined names), no pickle; sha256 of what was written."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from jax_aug.io import atomic_write_bytes


def save_params(path: str | os.PathLike, params, *, dtype=np.float32) -> str:
  """Writes `params` (a nested dict of arrays) as safetensors, floating leaves cast to `dtype`; returns
  the file's sha256."""
  from safetensors.numpy import save

  flat = {"/".join(k): np.asarray(jax.device_get(v)) for k, v in flatten_dict(dict(params)).items()}
  flat = {k: v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in flat.items()}
  data = save(flat)
  atomic_write_bytes(path, data)
  return hashlib.sha256(data).hexdigest()


def load_params(path: str | os.PathLike, *, dtype=np.float32) -> dict:
  """The nested parameter dict of a file written by `save_params` (floating leaves as `dtype`)."""
  from safetensors.numpy import load

  flat = load(Path(path).read_bytes())
  return unflatten_dict(
    {tuple(k.split("/")): v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in flat.items()}
  )
