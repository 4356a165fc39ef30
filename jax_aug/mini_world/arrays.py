"""The corpus and target dataset as in-memory arrays for training and checks: every JPEG decoded once
(bounded, `jax_aug.io`) and cached as .npy beside a hash of what it was made from.

50,000 x 32 x 32 x 3 uint8 is 154 MB; captions tokenized once with the real CLIP BPE tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jax_aug.io import atomic_write_bytes, load_image_file
from jax_aug.mini_world import concepts
from jax_aug.mini_world.corpus import read_metadata


def _save_npy(path: Path, array: np.ndarray) -> None:
  import io

  buffer = io.BytesIO()
  np.save(buffer, array, allow_pickle=False)
  atomic_write_bytes(path, buffer.getvalue())


def _cached(cache: Path, name: str, key: str, make) -> np.ndarray:
  path = cache / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npy"
  if path.exists():
    return np.load(path, allow_pickle=False)
  array = make()
  _save_npy(path, array)
  return array


def cached_embeddings(cache: str | os.PathLike, name: str, model_folder: Path, make) -> np.ndarray:
  """Embeddings made by `make` and cached under a key of the model folder's file hashes."""
  key = json.dumps(
    sorted((p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in Path(model_folder).iterdir() if p.is_file())
  )
  return _cached(Path(cache), name, key, make)


def load_images(paths: list[str], desc: str) -> np.ndarray:
  out = np.empty((len(paths), concepts.IMAGE_SIZE, concepts.IMAGE_SIZE, 3), np.uint8)
  for i, path in enumerate(tqdm(paths, desc=desc, unit="img", mininterval=5)):
    out[i] = np.asarray(load_image_file(path))
  return out


class CorpusArrays:
  """images uint8 [N, 32, 32, 3], captions, concepts, aesthetic, NSFW of a written corpus."""

  def __init__(self, root: str | os.PathLike, cache: str | os.PathLike):
    root, cache = Path(root), Path(cache)
    info = (root / "mini_world.json").read_text()
    table = read_metadata(root).to_pydict()
    self.captions = table["caption"]
    self.concepts = np.asarray(table["concept"])
    self.aesthetic = np.asarray(table["aesthetic"], np.float32)
    self.nsfw = np.asarray(table["NSFW"])
    self.images = _cached(
      cache,
      "corpus_images",
      info,
      lambda: load_images([str(root / "images" / p) for p in table["image_path"]], "decoding corpus"),
    )

  def __len__(self) -> int:
    return len(self.captions)

  def tokens(self, tokenizer, max_length: int, cache: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int32 [N, max_length] of the captions, padded as SD pads."""
    key = json.dumps([max_length, hashlib.sha256("\n".join(self.captions).encode()).hexdigest()])

    def make():
      out = tokenizer(self.captions, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
      return np.stack([out["input_ids"], out["attention_mask"]]).astype(np.int32)

    ids, mask = _cached(Path(cache), "corpus_tokens", key, make)
    return ids, mask


def target_arrays(
  root: str | os.PathLike, split: str, cache: str | os.PathLike, per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [M, 32, 32, 3], labels int32 [M] = position in concepts.WNIDS) of a target split, the
  first `per_class` images of each class (all when None), read through the project's folder listing."""
  from jax_aug.data.sources import folder_records

  root = Path(root)
  records = folder_records(root / split, list(concepts.WNIDS))
  by_class: dict[str, list[str]] = {}
  for r in records:
    by_class.setdefault(r["wnid"], []).append(r["path"])
  # natural order of the image index (folder listing sorts by name)
  order = lambda p: int(Path(p).stem.rsplit("_", 1)[1])
  paths, labels = [], []
  for label, wnid in enumerate(concepts.WNIDS):
    chosen = sorted(by_class[wnid], key=order)[:per_class]
    paths += chosen
    labels += [label] * len(chosen)
  key = (root / "mini_world.json").read_text() + json.dumps([split, per_class])
  images = _cached(Path(cache), f"target_{split}", key, lambda: load_images(paths, f"decoding target {split}"))
  return images, np.asarray(labels, np.int32)
