"""Loads config files by path and composes the whole study's config from the areas' own config files.

Config files are plain Python modules under `configs/` (not a package): `configs/base/<area>.py` defines
`get(scale)`, `configs/methods/<method>.py` defines `get_config(arg)`, as ml_collections' config_flags
expects of `--config=path:arg`. Loading them by path keeps them importable from anywhere (entry scripts,
tests, other configs) without putting the repository root on sys.path.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import ml_collections

from jax_aug.study import methods as methods_lib

SCALES = ("tiny", "paper")
# The areas whose base blocks the study config holds directly (methods hold their own blocks).
STUDY_AREAS = ("study", "data", "classifier")


def load_module(path: str | os.PathLike) -> ModuleType:
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"config file not found: {path}")
  spec = importlib.util.spec_from_file_location(f"_jax_aug_config_{path.stem}_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _check_scale(scale: str) -> str:
  if scale not in SCALES:
    raise ValueError(f"unknown scale {scale!r}: expected one of {SCALES}")
  return scale


def base_config(configs_dir: str | os.PathLike, area: str, scale: str) -> ml_collections.ConfigDict:
  """`configs/base/<area>.py`'s get(scale)."""
  module = load_module(Path(configs_dir) / "base" / f"{area}.py")
  if not hasattr(module, "get"):
    raise AttributeError(f"{module.__file__} has no get(scale) function")
  return module.get(_check_scale(scale))


def method_config(configs_dir: str | os.PathLike, method: str, scale: str) -> ml_collections.ConfigDict:
  """`configs/methods/<method>.py`'s get_config(scale)."""
  module = load_module(Path(configs_dir) / "methods" / f"{method}.py")
  if not hasattr(module, "get_config"):
    raise AttributeError(f"{module.__file__} has no get_config(arg) function")
  return module.get_config(_check_scale(scale))


def study_config(configs_dir: str | os.PathLike, scale: str) -> ml_collections.ConfigDict:
  """The whole study at one scale: study-level settings, the shared data and classifier blocks, and one
  block per method (`config.method.<name>`, each the method's own config file)."""
  config = base_config(configs_dir, "study", scale)
  config.data = base_config(configs_dir, "data", scale)
  config.classifier = base_config(configs_dir, "classifier", scale)
  config.method = ml_collections.ConfigDict()
  for method in methods_lib.METHODS:
    if method.kind != "baseline":
      config.method[method.name] = method_config(configs_dir, method.name, scale)
  # The paper's ablations: their base method's config with the settings they vary (run when named in
  # config.ablations).
  for ablation in methods_lib.ABLATIONS:
    block = method_config(configs_dir, ablation.ablation_of, scale)
    for path, value in ablation.overrides:
      *parents, leaf = path.split(".")
      target = block
      for part in parents:
        target = target[part]
      if leaf not in target:
        raise KeyError(f"ablation {ablation.name}: {path} is not a field of {ablation.ablation_of}'s config")
      target[leaf] = value
    config.method[ablation.name] = block
  return config
