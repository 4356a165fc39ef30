"""Decode-once image caches, on disk and in memory.

On disk (FFCV's idea): a split's images decoded once into an array_record file of uint8 RGB pixels, read back
by the loaders instead of the JPEGs, so every classifier run of the study skips the JPEG decode (a third of a
worker's time, docs/data.md).

In memory (`MemoryCachedReader`): the images a process decodes, kept for the life of the process up to a byte
budget, least recently used first out. The study runs dozens of classifiers in one process on the same subset,
validation and test images, each for tens of epochs; at the mini world's 32 px a PNG's decode costs ~5x its crop
and flip (docs/mini_world.md), so each image is decoded once per process. Pixels are the decoder's, unchanged.

Format (no pickle): `images.array_record`, one record per image, 8 bytes of header (height, width as
little-endian uint32) + height * width * 3 bytes of pixels; `index.json` = {"max_side", "paths"} (record i
is the image of paths[i]). Both are written under temp names and renamed, the index last, so a cache
without its index is an unfinished one.

Pixels: an image whose longer side exceeds `max_side` is stored downscaled to that side (Pillow's
antialiased bilinear, aspect kept): the crops then see a resampled image, not the original, which changes
their pixels (a crop of a downscaled image is resampled twice). With `max_side` at least the images'
longer side the cache holds the decoded pixels exactly and the loaders' batches equal the JPEG path's.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from jax_aug import io
from jax_aug.data.sources import ImageReader

_HEADER = np.dtype("<u4")
IMAGES_FILE, INDEX_FILE = "images.array_record", "index.json"


def stored_size(width: int, height: int, max_side: int) -> tuple[int, int]:
  """(width, height) as stored: unchanged up to `max_side`, else the longer side scaled to `max_side`."""
  longer = max(width, height)
  if longer <= max_side:
    return width, height
  scale = max_side / longer
  return max(1, round(width * scale)), max(1, round(height * scale))


def write_cache(
  records: Sequence[dict], cache_dir: str | os.PathLike, *, max_side: int, reader: ImageReader | None = None
) -> Path:
  """Decodes every record's image once into `cache_dir` (see the module docstring); returns cache_dir."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  if max_side < 1:
    raise ValueError(f"cache max_side must be a positive number of pixels, got {max_side}")
  reader = reader or ImageReader()
  cache_dir = Path(cache_dir)
  cache_dir.mkdir(parents=True, exist_ok=True)
  tmp = cache_dir / f".{IMAGES_FILE}.tmp"
  writer = array_record_module.ArrayRecordWriter(str(tmp), "group_size:1")
  try:
    for record in tqdm(records, desc=f"decoding once into {cache_dir}", unit="image"):
      image = reader(record["path"])
      size = stored_size(image.width, image.height, max_side)
      if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
      pixels = np.asarray(image, np.uint8)
      writer.write(np.array(pixels.shape[:2], _HEADER).tobytes() + pixels.tobytes())
  finally:
    writer.close()
  os.replace(tmp, cache_dir / IMAGES_FILE)
  io.atomic_write_json(cache_dir / INDEX_FILE, {"max_side": max_side, "paths": [r["path"] for r in records]})
  return cache_dir


class CachedReader:
  """Reads a record path's pixels from a cache written by `write_cache`; a drop-in for `ImageReader`.

  Holds only the folder name, so grain can pickle it into worker processes; each opens the file lazily.
  """

  def __init__(self, cache_dir: str | os.PathLike):
    self.cache_dir = str(cache_dir)
    index_path = Path(cache_dir) / INDEX_FILE
    if not index_path.exists():
      raise FileNotFoundError(f"no finished decode-once cache in {cache_dir} ({INDEX_FILE} missing)")
    self.max_side = int(io.read_json(index_path)["max_side"])
    self._positions = None
    self._source = None

  def __getstate__(self):
    return {"cache_dir": self.cache_dir, "max_side": self.max_side, "_positions": None, "_source": None}

  def __call__(self, path: str) -> Image.Image:
    if self._source is None:
      from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top

      paths = io.read_json(Path(self.cache_dir) / INDEX_FILE)["paths"]
      self._positions = {p: i for i, p in enumerate(paths)}
      self._source = array_record_data_source.ArrayRecordDataSource(str(Path(self.cache_dir) / IMAGES_FILE))
    if path not in self._positions:
      raise KeyError(f"image {path} is not in the decode-once cache {self.cache_dir}")
    data = self._source[self._positions[path]]
    height, width = np.frombuffer(data[: _HEADER.itemsize * 2], _HEADER)
    if len(data) != _HEADER.itemsize * 2 + int(height) * int(width) * 3:
      raise io.ImageDecodeError(f"{path}: cache record of {len(data)} bytes does not hold {height}x{width} RGB")
    pixels = np.frombuffer(data, np.uint8, offset=_HEADER.itemsize * 2).reshape(int(height), int(width), 3)
    return Image.fromarray(pixels, "RGB")


class _DecodedImages:
  """Decoded images by (path, file size, modification time), up to `budget_bytes` of pixels, LRU: a file
  rewritten in place is decoded again."""

  def __init__(self, budget_bytes: int):
    self.budget_bytes, self.used_bytes = budget_bytes, 0
    self._images: OrderedDict[tuple, tuple[Image.Image, int]] = OrderedDict()  # key -> (image, bytes)
    # The loaders' prefetch threads (training, then validation) share the store.
    self._lock = threading.Lock()

  def get(self, path: str, decode: Callable[[str], Image.Image]) -> Image.Image:
    key = path
    if not path.startswith("tfds://"):  # a tfds record never changes under the same path
      stat = os.stat(path)
      key = (path, stat.st_size, stat.st_mtime_ns)
    with self._lock:
      entry = self._images.get(key)
      if entry is not None:
        self._images.move_to_end(key)
        return entry[0]
    image = decode(path)  # outside the lock: another thread may decode meanwhile
    size = image.width * image.height * len(image.getbands())
    with self._lock:
      if size <= self.budget_bytes and key not in self._images:
        self._images[key] = (image, size)
        self.used_bytes += size
        while self.used_bytes > self.budget_bytes:
          _, (_, evicted_size) = self._images.popitem(last=False)
          self.used_bytes -= evicted_size
    return image


# One store per budget, shared by every reader of the process with that budget (a loader is built per epoch).
_STORES: dict[int, _DecodedImages] = {}


def clear_memory_caches() -> None:
  """Forgets every decoded image of the process (benchmarks timing a cold start)."""
  _STORES.clear()


class MemoryCachedReader:
  """`reader`'s images kept in this process's memory up to `budget_bytes` (see the module docstring); a drop-in
  for `ImageReader`. In-process loading only: grain worker processes would each hold their own copy for one
  epoch (`check_memory_cache` refuses the combination)."""

  def __init__(self, reader: Callable[[str], Image.Image], budget_bytes: int):
    if budget_bytes <= 0:
      raise ValueError(f"memory cache budget must be a positive number of bytes, got {budget_bytes}")
    self.reader = reader
    self.store = _STORES.setdefault(budget_bytes, _DecodedImages(budget_bytes))

  def __call__(self, path: str) -> Image.Image:
    return self.store.get(path, self.reader)


def check_memory_cache(memory_cache_mb: int, num_workers: int, name: str = "config.input") -> None:
  if memory_cache_mb < 0:
    raise ValueError(f"{name}.memory_cache_mb={memory_cache_mb}: expected 0 (off) or a positive budget in MiB")
  if memory_cache_mb and num_workers:
    raise ValueError(
      f"{name}.memory_cache_mb={memory_cache_mb} with num_workers={num_workers}: the memory cache serves"
      " in-process loading (num_workers=0); worker processes would each decode and hold their own copy per epoch"
    )
