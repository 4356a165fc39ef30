"""File I/O shared by every long job: atomic writes, append-only JSONL manifests, bounded image decoding.

Everything that reaches disk goes through a temp file + rename so a killed job never leaves a half-written
file under its final name, and every image that comes from outside (downloads, user folders) is decoded
with explicit size and pixel limits.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

# 64 MiB of encoded bytes and 1/4 gigapixel: far above any ImageNet or LAION image, far below what
# would exhaust a host's memory when decoded.
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 16384 * 16384
# ONE pixel limit: ours (`max_pixels`, checked on the header before any pixel is decoded, with our
# message). Pillow's own guard (a warning at ~89 Mpx, an error at ~179 Mpx, raised inside Image.open)
# would otherwise fire first with its message and ignore a raised `max_pixels`; every image jax_aug
# decodes goes through `decode_image`, so Pillow's global guard is switched off here.
Image.MAX_IMAGE_PIXELS = None
WHITE = (255, 255, 255)


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

  @staticmethod
  def line(record: dict) -> str:
    """One manifest line (keys sorted, newline-terminated)."""
    return json.dumps(record, sort_keys=True) + "\n"

  def append_many(self, records: Iterable[dict]) -> None:
    lines = "".join(self.line(r) for r in records)
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
    return [record for _, record in self.read_numbered()]

  def read_numbered(self) -> list[tuple[int, Any]]:
    """(line number, record) pairs, so a reader can name the line of a bad record."""
    if not self.path.exists():
      return []
    text = self.path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
      if not line.strip():
        continue
      try:
        records.append((number, json.loads(line)))
      except json.JSONDecodeError as e:
        is_partial_tail = number == len(lines) and not text.endswith("\n")
        if is_partial_tail:
          warnings.warn(f"{self.path}: ignoring a partial last line left by an interrupted write", stacklevel=2)
          continue
        raise ValueError(f"{self.path}:{number}: not a JSON object ({e.msg})") from e
    return records

  def keys(self, key_fn: Callable[[dict], Hashable]) -> set:
    return {key_fn(r) for r in self.read()}


def to_rgb(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
  """An 8-bit RGB image of any Pillow mode, with correct pixels where `convert("RGB")` is wrong.

  - 16-bit ("I;16*", and "I" as Pillow reads 16-bit PNG/TIFF): scaled to 8 bits, v -> round(v / 257)
    (65535 -> 255), where convert() would clip every value above 255 to white.
  - Transparency (RGBA, LA, PA, RGBa, La, and palette or RGB/L images with a transparent colour):
    composited over `background`, where convert() drops alpha and shows whatever colour a transparent
    pixel happens to hold.
  - Everything else (RGB, L, 1, P, CMYK, YCbCr, LAB, HSV) is Pillow's convert("RGB"), which is also what
    torchvision's ImageFolder loader does: every ILSVRC2012 image (8-bit JPEG: RGB, grayscale or CMYK) is
    read exactly as torchvision reads it.
  """
  if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
    values = np.asarray(image).astype(np.float64)
    gray = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")
  has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
  if image.mode == "RGB" and not has_alpha:
    return image  # convert("RGB") would copy every pixel (~5% of a training example's time)
  if not has_alpha:
    return image.convert("RGB")
  rgba = image.convert("RGBA")
  canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
  return Image.alpha_composite(canvas, rgba).convert("RGB")


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How untrusted bytes become pixels: size limits, the background under transparency, and whether EXIF
  orientation is applied (downloads: yes, and they are stored upright; ImageNet: no, as torchvision reads
  it; generated images are written by us without EXIF)."""

  max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
  max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
  background: tuple[int, int, int] = WHITE
  exif_orientation: bool = False

  def as_kwargs(self) -> dict:
    return dataclasses.asdict(self)


def decode_image(
  data: bytes,
  *,
  source: str,
  max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
  max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
  background: tuple[int, int, int] = WHITE,
  exif_orientation: bool = False,
) -> Image.Image:
  """Decodes untrusted image bytes into an RGB image (`to_rgb`), or raises ImageDecodeError naming `source`.

  `max_pixels` is the only pixel limit (see MAX_IMAGE_PIXELS above), checked on the header. With
  `exif_orientation` the EXIF Orientation tag is applied (phone photos stand upright).
  """
  if len(data) > max_bytes:
    raise ImageDecodeError(f"{source}: {len(data)} bytes exceeds the limit of {max_bytes} bytes")
  try:
    image = Image.open(io.BytesIO(data))  # header only: no pixel data decoded yet
    width, height = image.size
    if width * height > max_pixels:
      raise ImageDecodeError(
        f"{source}: {width}x{height} pixels exceeds the limit of {max_pixels} pixels (decompression bomb guard)"
      )
    image.load()
    if exif_orientation:
      image = ImageOps.exif_transpose(image)
    return to_rgb(image, background)
  except ImageDecodeError:
    raise
  except Exception as e:  # PIL raises many types for corrupt input; all mean "not a usable image".
    raise ImageDecodeError(f"{source}: not a decodable image ({type(e).__name__}: {e})") from e


def load_image_file(path: str | os.PathLike, **options) -> Image.Image:
  """Reads and decodes one image file; `options` are decode_image's keywords (limits, background, EXIF)."""
  path = Path(path)
  try:
    size = path.stat().st_size
  except FileNotFoundError:
    raise FileNotFoundError(f"image file not found: {path}") from None
  max_bytes = options.get("max_bytes", DEFAULT_MAX_IMAGE_BYTES)
  if size > max_bytes:
    raise ImageDecodeError(f"{path}: {size} bytes exceeds the limit of {max_bytes} bytes")
  return decode_image(path.read_bytes(), source=str(path), **options)
