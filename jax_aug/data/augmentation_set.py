"""On-disk format of an augmentation set (generated or retrieved images) and the resampler of the paper.

Layout of one augmentation set (one method):

  <root>/images/<wnid>/<key>.png     the images, each written atomically
  <root>/manifest.jsonl              one row per finished image (or manifest-<shard>.jsonl per writer)

A row is `{"wnid", "key", "path", "method", ...provenance}` with `path` relative to `root`. The image is
written before its row is appended, so every listed file exists and a killed job resumes by skipping the
keys already listed (`AugmentationSetWriter.has`). Labels are never stored: the input pipeline maps wnid
to label from the study's class list, so excluding classes never renumbers a manifest.

The paper generates (or retrieves) 390 (130) images per class and resamples them into 5 sets with the
10% subset's per-class counts, one classifier per set (`resample`).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from jax_aug.data.classes import check_class_id, class_seed
from jax_aug.io import JsonlManifest, atomic_write_bytes

MANIFEST_GLOB = "manifest*.jsonl"
# Keys become file names: letters, digits, '_', '-', '.', never starting with '.', so no key can name a
# hidden file, a parent directory or a path separator.
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def validate_key(key: str) -> str:
  if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
    raise ValueError(
      f"bad augmentation item key {key!r}: expected 1-128 characters of [A-Za-z0-9_.-] not starting"
      " with '.', derived from (class, image index), never from a URL or caption"
    )
  return key


def item_key(wnid: str, index: int) -> str:
  """The key of image `index` of class `wnid`, e.g. 'n01491361_000042'."""
  if not isinstance(index, (int, np.integer)) or index < 0:
    raise ValueError(f"bad image index {index!r} for class {wnid}: expected an integer >= 0")
  return f"{check_class_id(wnid)}_{int(index):06d}"


def _png_bytes(image: Image.Image | np.ndarray, key: str) -> bytes:
  if isinstance(image, np.ndarray):
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"image for {key}: expected a uint8 array [H, W, 3], got {image.dtype} {list(image.shape)}")
    image = Image.fromarray(image, mode="RGB")
  elif not isinstance(image, Image.Image):
    raise TypeError(f"image for {key}: expected a PIL image or a uint8 array, got {type(image).__name__}")
  buffer = io.BytesIO()
  image.convert("RGB").save(buffer, format="PNG")
  return buffer.getvalue()


class AugmentationSetWriter:
  """Adds images of one method to an augmentation set, resumably.

  Several processes may fill the same set (e.g. one per host) when each passes its own `shard`: each
  then appends to its own `manifest-<shard>.jsonl`, so no two processes append to one file.
  """

  def __init__(self, root: str | os.PathLike, method: str, *, shard: int | None = None):
    if not method or not isinstance(method, str):
      raise ValueError(f"bad method name {method!r}: expected a non-empty string")
    self.root = Path(root)
    self.method = method
    name = "manifest.jsonl" if shard is None else f"manifest-{int(shard):05d}.jsonl"
    self.manifest = JsonlManifest(self.root / name)
    self._keys = set()
    for _, row in _read_rows(self.root):
      if row.get("method") != method:
        raise ValueError(
          f"{self.root} holds images of method {row.get('method')!r} (key {row.get('key')!r}),"
          f" not {method!r}: use one directory per method"
        )
      self._keys.add(row["key"])

  def has(self, key: str) -> bool:
    return validate_key(key) in self._keys

  def add(self, image: Image.Image | np.ndarray, record: Mapping) -> dict:
    """Writes `images/<wnid>/<key>.png`, then appends its manifest row; returns the row.

    `record` needs "wnid" and "key"; any other fields (prompt, seed, checkpoint, url, similarity,
    aesthetic score, ...) are kept as provenance.
    """
    for field in ("wnid", "key"):
      if field not in record:
        raise ValueError(f"augmentation record {dict(record)!r} lacks the field {field!r}")
    wnid, key = check_class_id(record["wnid"]), validate_key(record["key"])
    if key in self._keys:
      raise ValueError(f"{self.root}: key {key!r} is already in the augmentation set")
    path = Path("images") / wnid / f"{key}.png"
    atomic_write_bytes(self.root / path, _png_bytes(image, key))
    row = {**record, "path": path.as_posix(), "method": self.method}
    self.manifest.append(row)
    self._keys.add(key)
    return row


def _read_rows(root: Path) -> list[tuple[str, dict]]:
  """("<manifest>:<line>", row) of every manifest row of the set."""
  rows = []
  for manifest in sorted(root.glob(MANIFEST_GLOB)):
    rows.extend((f"{manifest}:{number}", row) for number, row in JsonlManifest(manifest).read_numbered())
  return rows


def validate_row(row, root: Path, where: str) -> dict:
  """A manifest row checked as untrusted input: a JSON object with a safe key, a safe class id (an
  ILSVRC2012 one where shaped like a wnid) and a path that resolves to a file inside `root`; returns it
  with `path` absolute. Errors name `where` (manifest file and line)."""
  if not isinstance(row, dict):
    raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
  missing = [field for field in ("wnid", "key", "path") if field not in row]
  if missing:
    raise ValueError(f"{where}: the row lacks {missing} (every row needs 'wnid', 'key' and 'path'): {row}")
  try:
    validate_key(row["key"])
    check_class_id(row["wnid"])
  except ValueError as e:
    raise ValueError(f"{where}: {e.args[0]}") from None
  if not isinstance(row["path"], str) or Path(row["path"]).is_absolute():
    raise ValueError(f"{where}: path {row['path']!r} must be relative to the set folder {root}")
  path = (root / row["path"]).resolve()
  if not path.is_relative_to(root):
    raise ValueError(f"{where}: path {row['path']!r} resolves to {path}, outside the set folder {root}")
  if not path.is_file():
    raise FileNotFoundError(f"{where}: lists {row['path']} (key {row['key']}) but the file is missing")
  return {**row, "path": str(path)}


def load_augmentation_set(root: str | os.PathLike) -> list[dict]:
  """All rows of an augmentation set, validated (`validate_row`), with `path` made absolute."""
  root = Path(root).resolve()
  if not root.is_dir():
    raise FileNotFoundError(f"augmentation set directory not found: {root}")
  numbered = _read_rows(root)
  if not numbered:
    raise ValueError(f"{root}: no {MANIFEST_GLOB} rows: the augmentation set is empty")
  rows, seen = [], {}
  for where, row in numbered:
    row = validate_row(row, root, where)
    if row["key"] in seen:
      raise ValueError(f"{where}: key {row['key']!r} is listed twice (first at {seen[row['key']]})")
    seen[row["key"]] = where
    rows.append(row)
  return rows


def resample(
  records: Sequence[dict], per_class_counts: Mapping[str, int], n_sets: int = 5, seed: int = 0
) -> list[list[dict]]:
  """Draws `n_sets` augmentation sets, each with `per_class_counts[wnid]` images of every class.

  Each set draws without replacement within itself; the sets are independent of each other (the paper
  trains one classifier per set). Candidates are ordered by path first, so the draw depends only on which
  images exist, not on the order in which a resumed job listed them. Set `s` of class `wnid` uses its
  own stream seeded by (seed, s, wnid), so adding a class never changes another class's draw.
  """
  if n_sets < 1:
    raise ValueError(f"n_sets must be >= 1, got {n_sets}")
  by_class: dict[str, list[dict]] = {}
  for record in records:
    by_class.setdefault(record["wnid"], []).append(record)
  for wnid in by_class:
    by_class[wnid].sort(key=lambda r: r["path"])
  for wnid, count in per_class_counts.items():
    have = len(by_class.get(wnid, []))
    if count > have:
      raise ValueError(f"class {wnid}: the augmentation set has {have} images but a resampled set needs {count}")
  sets = []
  for set_index in range(n_sets):
    drawn = []
    for wnid in sorted(per_class_counts):
      rng = np.random.default_rng([seed, set_index, class_seed(check_class_id(wnid))])
      candidates = by_class.get(wnid, [])
      chosen = rng.choice(len(candidates), size=per_class_counts[wnid], replace=False)
      drawn.extend(candidates[i] for i in sorted(chosen))
    sets.append(drawn)
  return sets
