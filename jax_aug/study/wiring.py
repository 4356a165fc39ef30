"""The study's calls into the other areas' public functions, and the study-wide data view.

Each function here maps the study's state (where the splits, the exclusion list and a method's images are)
onto one area's public entry point and its own config block; nothing here reimplements an area.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

from jax_aug.data import augmentation_set, subsets
from jax_aug.data.imagenet_classes import class_by_wnid
from jax_aug.io import read_json

# Official ILSVRC2012 validation split (50 per class), the split every final score is computed on.
EVAL_SPLIT = "test"
EVAL_SPLIT_DESCRIPTION = "ILSVRC2012 validation ('test' split of jax_aug.data.subsets)"


def prepare_data(data_config, out: Path) -> None:
  """The dataset (drawn first at tiny scale) and its splits in `out/splits/`; no exclusions yet."""
  if data_config.get("excluded_classes"):
    raise ValueError(
        "config.data.excluded_classes must be empty in a study: the study excludes the classes retrieval"
        " could not fill, for every method alike, after retrieval ran")
  subsets.prepare_splits(data_config, out)


@dataclasses.dataclass(frozen=True)
class StudyData:
  """The splits as the study sees them: excluded classes dropped, labels = positions in `wnids`."""
  split_dir: Path
  excluded: Mapping[str, str]

  @property
  def wnids(self) -> list[str]:
    info = read_json(self.split_dir / "info.json")
    return subsets.study_wnids(info["wnids"], self.excluded)

  @property
  def class_names(self) -> dict[str, str]:
    return {w: class_by_wnid(w).name for w in self.wnids}

  def split_path(self, name: str) -> Path:
    if name not in subsets.SPLIT_NAMES:
      raise ValueError(f"unknown split {name!r}: expected one of {subsets.SPLIT_NAMES}")
    return self.split_dir / f"{name}.jsonl"

  def split(self, name: str) -> list[dict]:
    return subsets.apply_exclusions(subsets.read_manifest(self.split_path(name)), self.excluded)


def study_data(data_dir: Path, exclusion: Path | None) -> StudyData:
  return StudyData(Path(data_dir) / "splits", subsets.load_exclusions(exclusion) if exclusion else {})


def read_exclusions(path: Path) -> list[dict]:
  return [{"wnid": w, "reason": r} for w, r in subsets.load_exclusions(path).items()]


def load_augmentation(root: Path) -> list[dict]:
  return augmentation_set.load_augmentation_set(root)


def resample_sets(augmentation_dir: Path, out: Path, *, data_dir: Path, exclusion: Path | None, n_sets: int,
                  seed: int) -> list[Path]:
  """`out/set_<i>.jsonl`: n resampled sets with the 10% subset's per-class counts, excluded classes dropped."""
  data = study_data(data_dir, exclusion)
  counts = subsets.per_class_counts(data.split("subset"))
  records = subsets.apply_exclusions(load_augmentation(augmentation_dir), data.excluded)
  paths = []
  for index, drawn in enumerate(augmentation_set.resample(records, counts, n_sets=n_sets, seed=seed)):
    path = Path(out) / f"set_{index}.jsonl"
    subsets.write_manifest(path, drawn)
    paths.append(path)
  return paths
