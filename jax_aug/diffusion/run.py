"""`sample_augmentation_set(config, workdir)`: one sampling method's augmentation set from its config."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jax_aug import method_kinds
from jax_aug.data import classes as classes_lib
from jax_aug.data import subsets
from jax_aug.diffusion import engine, methods
from jax_aug.diffusion.loading import StableDiffusion, load_configured
from jax_aug.io import read_json


def settings_from_config(config) -> engine.SamplerSettings:
  return engine.SamplerSettings(
    num_inference_steps=config.num_inference_steps,
    guidance_scale=config.guidance_scale,
    scheduler=config.scheduler,
    resolution=config.resolution,
    boomerang_strength=config.boomerang_strength,
  )


def _splits_dir(config, workdir: Path) -> Path:
  if config.splits_dir:
    return Path(config.splits_dir)
  return subsets.prepare_splits(config.data, workdir / "data")["subset"].parent


def sample_augmentation_set(
  config,
  workdir: str | os.PathLike,
  *,
  model: StableDiffusion | None = None,
  requests: Sequence[engine.Request] | None = None,
  safety_fn: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Path:
  """Writes (or completes) the augmentation set of the method `config.method` (its name, kind and prompt
  strategy) into `workdir`; returns `workdir`.

  `model`: a loaded (e.g. fine-tuned, via `StableDiffusion.with_overrides`) model instead of
  `config.model`. `requests`: explicit requests (fine-tuned conditionings) instead of the method's
  prompt/Boomerang builder; `config.method.name` then only names the set. `safety_fn` replaces SD's checker
  (tests); `config.safety_checker=False` turns filtering off explicitly.
  """
  workdir = Path(workdir)
  method = config.method
  if requests is None and method.kind not in methods.SAMPLING_KINDS:
    raise ValueError(
      f"{method.name} is a {method.kind} method: sample_augmentation_set builds requests for"
      f" {methods.SAMPLING_KINDS} only (fine-tuned methods pass their own)"
    )
  model = model if model is not None else load_configured(config.model, workdir)
  read_image = None
  if requests is None:
    boomerang = method.kind == method_kinds.BOOMERANG
    wnids = list(config.wnids) if config.wnids else None
    subset_records = ()
    # The dataset's classes: those the data stage stored beside the splits, else the data block's.
    classes = None
    if wnids is None or boomerang or config.splits_dir:
      split_dir = _splits_dir(config, workdir)
      classes = classes_lib.read_split_classes(split_dir)
      wnids = wnids or list(read_json(split_dir / "info.json")["wnids"])
      if boomerang:
        subset_records = subsets.read_manifest(split_dir / "subset.jsonl")
    classes = classes or subsets.configured_classes(config.data, workdir / "data")
    requests = methods.build_requests(
      method.kind,
      wnids=wnids,
      images_per_class=config.images_per_class,
      seed=config.seed,
      prompt_strategy=method.prompt_strategy,
      subset_records=subset_records,
      lemmas=config.prompt_lemmas,
      classes=classes,
    )
  if config.boomerang_strength:
    read_image = subsets.image_reader(config.data, workdir / "data")
  if safety_fn is None and not config.safety_checker:
    safety_fn = lambda images: np.zeros(len(images), dtype=bool)
  return engine.sample_requests(
    model,
    requests,
    workdir,
    method=method.name,
    settings=settings_from_config(config),
    seed=config.seed,
    batch_size=config.batch_size,
    safety_fn=safety_fn,
    max_attempts=config.max_safety_attempts,
    read_image=read_image,
    profile_first_batch=config.profile_first_step,
    profile_batches=config.profile_steps,
  )
