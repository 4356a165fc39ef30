"""File I/O shared by every long job: atomic writes, append-only JSONL manifests, bounded image decoding.

Everything that reaches disk goes through a temp file + rename so a killed job never leaves a half-written
file under its final name, and every image that comes from outside (downloads, user folders) is decoded
with explicit size and pixel limits.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable

from PIL import Image

log = logging.getLogger(__name__)

# 64 MiB of encoded bytes and 1/4 gigapixel: far above any ImageNet or LAION image, far below what
# would exhaust a host's memory when decoded (Pillow's own bomb guard warns at ~89 Mpx only).
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 16384 * 16384


class ImageDecodeError(ValueError):
  """An image file or download could not be used; the message names its source."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


class JsonlManifest:
  """Append-only JSON-lines file of finished work items.

  Each append is one flushed + fsynced line, so a crash can only cut the last line short; `read` drops
  such a partial trailing line (it was never acknowledged) and refuses corruption anywhere else.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)

  def append(self, record: dict) -> None:
    self.append_many([record])

  def append_many(self, records: Iterable[dict]) -> None:
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    if not lines:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._truncate_partial_tail()
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(lines)
      f.flush()
      os.fsync(f.fileno())

  def _truncate_partial_tail(self) -> None:
    """Drops an unterminated last line left by a crash, so the next append starts on a fresh line."""
    if not self.path.exists():
      return
    data = self.path.read_bytes()
    if data and not data.endswith(b"\n"):
      keep = data.rfind(b"\n") + 1
      with open(self.path, "r+b") as f:
        f.truncate(keep)

  def read(self) -> list[dict]:
    if not self.path.exists():
      return []
    text = self.path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        is_partial_tail = number == len(lines) and not text.endswith("\n")
        if is_partial_tail:
          warnings.warn(f"{self.path}: ignoring a partial last line left by an interrupted write")
          continue
        raise ValueError(f"{self.path}:{number}: not a JSON object ({e.msg})") from e
    return records

  def keys(self, key_fn: Callable[[dict], Hashable]) -> set:
    return {key_fn(r) for r in self.read()}


def decode_image(
    data: bytes,
    *,
    source: str,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Image.Image:
  """Decodes untrusted image bytes into an RGB image, or raises ImageDecodeError naming `source`."""
  if len(data) > max_bytes:
    raise ImageDecodeError(f"{source}: {len(data)} bytes exceeds the limit of {max_bytes} bytes")
  try:
    with Image.open(io.BytesIO(data)) as probe:
      width, height = probe.size  # header only: no pixel data decoded yet
    if width * height > max_pixels:
      raise ImageDecodeError(
          f"{source}: {width}x{height} pixels exceeds the limit of {max_pixels} pixels"
          " (decompression bomb guard)")
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      image = Image.open(io.BytesIO(data))
      image.load()
  except ImageDecodeError:
    raise
  except Exception as e:  # PIL raises many types for corrupt input; all mean "not a usable image".
    raise ImageDecodeError(f"{source}: not a decodable image ({type(e).__name__}: {e})") from e
  return image.convert("RGB")


def load_image_file(path: str | os.PathLike, **limits) -> Image.Image:
  path = Path(path)
  try:
    size = path.stat().st_size
  except FileNotFoundError:
    raise FileNotFoundError(f"image file not found: {path}") from None
  max_bytes = limits.get("max_bytes", DEFAULT_MAX_IMAGE_BYTES)
  if size > max_bytes:
    raise ImageDecodeError(f"{path}: {size} bytes exceeds the limit of {max_bytes} bytes")
  return decode_image(path.read_bytes(), source=str(path), **limits)
