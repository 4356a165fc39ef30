"""Loads config files by path and composes the whole study's config from the areas' own config files.

Config files are plain Python modules under `configs/` (not a package): `configs/base/<area>.py` defines
`get(scale)`, `configs/methods/<method>.py` defines `get_config(arg)`, as ml_collections' config_flags
expects of `--config=path:arg`. Loading them by path keeps them importable from anywhere (entry scripts,
tests, other configs) without putting the repository root on sys.path.
"""

from __future__ import annotations

import ast
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


def _split_top_level(text: str) -> list[str]:
  """`text` split at the commas outside brackets ("paper,keep_epochs=(1, 2),seed=1" -> 3 parts)."""
  parts, depth, start = [], 0, 0
  for index, char in enumerate(text):
    depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(char, 0)
    if char == "," and depth == 0:
      parts.append(text[start:index])
      start = index + 1
  return [p.strip() for p in parts + [text[start:]]]


def parse_arg(arg: str) -> tuple[str, dict[str, str]]:
  """big_vision-style config argument: "paper,images_per_class=50,finetune.policy.max_epochs=8" ->
  ("paper", {"images_per_class": "50", "finetune.policy.max_epochs": "8"}); the values are typed later,
  by the field they replace (`apply_overrides`)."""
  scale, *pairs = _split_top_level(arg or "tiny")
  overrides = {}
  for pair in pairs:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"config argument {arg!r}: {pair!r} is not key=value")
    overrides[key.strip()] = value.strip()
  return _check_scale(scale), overrides


def _typed(path: str, text: str, current):
  """`text` as the type of the field it replaces (bool, int, float, str, tuple; None: a Python literal)."""
  try:
    if isinstance(current, bool):
      if text.lower() not in ("true", "false"):
        raise ValueError("expected true or false")
      return text.lower() == "true"
    if isinstance(current, (int, float)):
      return type(current)(text)
    if isinstance(current, str):
      return text
    value = ast.literal_eval(text)
    return tuple(value) if isinstance(current, (tuple, list)) else value
  except (ValueError, SyntaxError) as error:
    raise ValueError(f"config override {path}={text!r}: not a {type(current).__name__} ({error})") from None


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> ml_collections.ConfigDict:
  """Sets each dotted `path` of `overrides` (from `parse_arg`) in `config`, typed by the field it replaces; a
  path that is not a field of `config` is refused, naming the valid keys where it went wrong."""
  for path, text in overrides.items():
    *parents, leaf = path.split(".")
    block = config
    for depth, part in enumerate(parents + [leaf]):
      if not isinstance(block, ml_collections.ConfigDict) or part not in block:
        where = ".".join(parents[:depth]) or "the config"
        valid = sorted(block.keys()) if isinstance(block, ml_collections.ConfigDict) else []
        raise ValueError(f"config override {path!r}: {part!r} is not a field of {where}; valid keys: {valid}")
      if depth < len(parents):
        block = block[part]
    block[leaf] = _typed(path, text, block[leaf])
  return config


def base_config(configs_dir: str | os.PathLike, area: str, scale: str) -> ml_collections.ConfigDict:
  """`configs/base/<area>.py`'s get(scale)."""
  module = load_module(Path(configs_dir) / "base" / f"{area}.py")
  if not hasattr(module, "get"):
    raise AttributeError(f"{module.__file__} has no get(scale) function")
  return module.get(_check_scale(scale))


def method_config(configs_dir: str | os.PathLike, method: str, arg: str) -> ml_collections.ConfigDict:
  """`configs/methods/<method>.py`'s get_config(arg); `arg` = "<scale>[,key=value,...]"."""
  module = load_module(Path(configs_dir) / "methods" / f"{method}.py")
  if not hasattr(module, "get_config"):
    raise AttributeError(f"{module.__file__} has no get_config(arg) function")
  return module.get_config(arg)


def study_config(configs_dir: str | os.PathLike, scale: str) -> ml_collections.ConfigDict:
  """The whole study at one scale: study-level settings, the shared data and classifier blocks, and one
  block per method config file `configs/methods/<name>.py` (`config.method_configs.<name>`), no list of
  them kept anywhere else; plus the paper's ablations, each its varied method's block with its overrides."""
  config = base_config(configs_dir, "study", scale)
  config.data = base_config(configs_dir, "data", scale)
  config.classifier = base_config(configs_dir, "classifier", scale)
  config.method_configs = ml_collections.ConfigDict()
  for path in sorted((Path(configs_dir) / "methods").glob("*.py")):
    config.method_configs[path.stem] = method_config(configs_dir, path.stem, _check_scale(scale))
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
    config.method_configs[ablation.name] = block
  return config


def point_data_blocks(config: ml_collections.ConfigDict, **fields) -> None:
  """Points the study at one dataset: sets `fields` (values or FieldReferences, shared as given) on the study's
  data block and every method's, drops their synthetic data, and lets retrieval take the dataset's classes
  from the study (its `classes = None`)."""
  for block in [config.data] + [m.data for m in config.method_configs.values() if "data" in m]:
    block.synthetic = None
    for field, value in fields.items():
      block[field] = value
  for method in config.method_configs.values():
    if "classes" in method:
      method.classes = None
