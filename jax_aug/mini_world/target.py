"""The mini world's target dataset (the ImageNet stand-in) in the ILSVRC folder layout.

  <root>/train/<wnid>/<wnid>_<i>.JPEG   n_c images per class (concepts.target_train_counts)
  <root>/val/<wnid>/<wnid>_<i>.JPEG     TARGET_TEST_PER_CLASS per class (the study's test split)
  <root>/mini_world.json                written last (marks a complete dataset)

`jax_aug.data.sources.folder_listing` reads it like ILSVRC2012; the study draws its 10% subset, validation
and 20% subset from train/ with its own rule. Image i of class c in split s depends only on (seed, s, c, i).
A class folder is written to a temporary name and renamed into place, so a killed run resumes per class.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jax_aug.io import atomic_write_json, read_json
from jax_aug.mini_world import concepts
from jax_aug.mini_world.drawing import draw_target_image, jpeg_bytes

SPLITS = ("train", "val")
COMPLETE_FILE = "mini_world.json"


def target_item(wnid: str, split: str, index: int, seed: int = concepts.WORLD_SEED) -> bytes:
  """JPEG bytes of image `index` of class `wnid` in `split`."""
  rng = np.random.default_rng([seed, 2, SPLITS.index(split), int(wnid[1:]), index])
  image, quality = draw_target_image(wnid, rng)
  return jpeg_bytes(image, quality)


def split_counts(seed: int = concepts.WORLD_SEED, wnids: Sequence[str] = concepts.WNIDS) -> dict[str, dict[str, int]]:
  train = concepts.target_train_counts(seed)
  return {"train": {w: train[w] for w in wnids}, "val": {w: concepts.TARGET_TEST_PER_CLASS for w in wnids}}


def write_target(root: str | os.PathLike, *, seed: int = concepts.WORLD_SEED, wnids: Sequence[str] = concepts.WNIDS) -> Path:
  """Writes (or completes) the target dataset of `wnids` (default: all the world's classes) under `root`
  and returns `root`."""
  root = Path(root)
  unknown = [w for w in wnids if w not in concepts.CONCEPT_BY_WNID]
  if unknown:
    raise ValueError(f"{unknown} are not classes of the mini world; expected some of {list(concepts.WNIDS)}")
  counts = split_counts(seed, wnids)
  info = {"design_version": concepts.DESIGN_VERSION, "seed": seed, "counts": counts}
  if (root / COMPLETE_FILE).exists():
    found = read_json(root / COMPLETE_FILE)
    if found != info:
      raise ValueError(f"{root} holds a mini-world target dataset of {found}, not the requested {info}")
    return root
  for split in SPLITS:
    for wnid in tqdm(wnids, desc=f"mini-world target {split}", unit="class"):
      final = root / split / wnid
      if final.exists():
        continue
      tmp = root / split / f".{wnid}.tmp"
      if tmp.exists():
        shutil.rmtree(tmp)
      tmp.mkdir(parents=True)
      for index in range(counts[split][wnid]):
        (tmp / f"{wnid}_{index}.JPEG").write_bytes(target_item(wnid, split, index, seed))
      os.replace(tmp, final)
  atomic_write_json(root / COMPLETE_FILE, info)
  return root
