"""Decode-once image cache (FFCV's idea): a split's images decoded once into an array_record file of uint8
RGB pixels, read back by the loaders instead of the JPEGs, so every classifier run of the study skips the
JPEG decode (a third of a worker's time, docs/data.md).

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
from collections.abc import Sequence
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
