"""A small procedurally drawn ImageNet, so that every pipeline, the tests and the tiny config run offline.

Each class gets its own shape, colour and background texture; every image varies position, size, rotation,
colour and noise, so a small CNN can learn the classes well above chance.
Written as the ILSVRC folder layout (`train/<wnid>/<wnid>_<i>.JPEG`, `val/<wnid>/...`) and optionally as a
tfds `imagenet2012`-like array_record dataset (features image/label/file_name, label = the standard ILSVRC2012
index), built without TensorFlow.
"""

from __future__ import annotations

import colorsys
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from jax_aug.data.imagenet_classes import class_by_wnid, load_classes
from jax_aug.io import atomic_write_bytes, atomic_write_json

# A few real classes (tiger shark, goldfish, tiger cat, desktop computer, ...), so the study's class
# metadata and prompts apply to the synthetic data unchanged.
DEFAULT_WNIDS = ("n01443537", "n01491361", "n02123159", "n03180011", "n04152593", "n07747607")
SPLITS = ("train", "val")
# Written last: its presence says the dataset under root is complete (a killed run is simply redone).
COMPLETE_FILE = "synthetic.json"
TFDS_NAME = "imagenet2012"
TFDS_VERSION = "5.1.0"  # the version of tfds' real imagenet2012, so readers see the same layout
_SHAPES = ("ellipse", "rectangle", "triangle", "cross", "ring", "diamond", "star", "bars")
_TEXTURES = ("flat", "stripes", "checks", "noise")


def _class_style(class_position: int, num_classes: int) -> dict:
  return {
    "shape": _SHAPES[class_position % len(_SHAPES)],
    "hue": (class_position / max(num_classes, 1) + 0.13 * (class_position // len(_SHAPES))) % 1.0,
    "texture": _TEXTURES[(class_position // 2) % len(_TEXTURES)],
  }


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
  return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
  if shape == "triangle":
    corners = [(r, a) for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
  elif shape == "diamond":
    corners = [(r, a) for a in (0, math.pi / 2, math.pi, 3 * math.pi / 2)]
  elif shape == "star":
    corners = [(r if k % 2 == 0 else 0.45 * r, k * math.pi / 5) for k in range(10)]
  else:  # cross: a 12-corner plus sign
    w = 0.35 * r
    corners = [
      (math.hypot(x, y), math.atan2(y, x))
      for x, y in (
        (w, r),
        (w, w),
        (r, w),
        (r, -w),
        (w, -w),
        (w, -r),
        (-w, -r),
        (-w, -w),
        (-r, -w),
        (-r, w),
        (-w, w),
        (-w, r),
      )
    ]
  return [(cx + d * math.cos(a + angle), cy + d * math.sin(a + angle)) for d, a in corners]


def draw_image(class_position: int, num_classes: int, rng: np.random.Generator, size: int) -> Image.Image:
  """One image of class `class_position` with per-image variation drawn from `rng`."""
  style = _class_style(class_position, num_classes)
  background_hue = style["hue"] + 0.5 + rng.uniform(-0.08, 0.08)
  background = np.empty((size, size, 3), np.float32)
  background[:] = _rgb(background_hue, rng.uniform(0.15, 0.4), rng.uniform(0.45, 0.85))
  yy, xx = np.mgrid[0:size, 0:size]
  period = rng.uniform(0.08, 0.16) * size
  if style["texture"] == "stripes":
    background *= (0.8 + 0.2 * (np.sin((xx + yy) * 2 * math.pi / period) > 0))[..., None]
  elif style["texture"] == "checks":
    background *= (0.8 + 0.2 * (((xx // period) + (yy // period)) % 2))[..., None]
  elif style["texture"] == "noise":
    background *= rng.uniform(0.75, 1.0, (size, size, 1))
  image = Image.fromarray(background.clip(0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(image)
  colour = _rgb(style["hue"] + rng.uniform(-0.04, 0.04), rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0))
  r = rng.uniform(0.2, 0.35) * size
  cx, cy = rng.uniform(r, size - r, 2)
  angle = rng.uniform(0, 2 * math.pi)
  box = (cx - r, cy - r, cx + r, cy + r)
  match style["shape"]:
    case "ellipse":
      draw.ellipse((cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r), fill=colour)
    case "rectangle":
      draw.rectangle((cx - r, cy - 0.6 * r, cx + r, cy + 0.6 * r), fill=colour)
    case "ring":
      draw.ellipse(box, outline=colour, width=max(2, int(0.3 * r)))
    case "bars":
      for k in range(3):
        x0 = cx - r + k * 0.8 * r
        draw.rectangle((x0, cy - r, x0 + 0.4 * r, cy + r), fill=colour)
    case _:
      draw.polygon(_polygon(style["shape"], cx, cy, r, angle), fill=colour)
  pixels = np.asarray(image, np.float32) + rng.normal(0, 6, (size, size, 3))
  return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _jpeg_bytes(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=90)
  return buffer.getvalue()


def _examples(wnids: Sequence[str], split: str, per_class: int, image_size: int, seed: int):
  """(wnid, file name, JPEG bytes) of one split; image i of class c depends on (seed, split, c, i) and on
  c's position in `wnids` (its style), not on the image counts."""
  for position, wnid in enumerate(wnids):
    for i in range(per_class):
      rng = np.random.default_rng([seed, SPLITS.index(split), int(wnid[1:]), i])
      yield wnid, f"{wnid}_{i}.JPEG", _jpeg_bytes(draw_image(position, len(wnids), rng, image_size))


def make_synthetic_imagenet(
  root: str | os.PathLike,
  *,
  wnids: Sequence[str] | None = None,
  train_per_class: int,
  val_per_class: int,
  image_size: int,
  seed: int,
  tfds: bool = False,
) -> Path:
  """Writes the synthetic dataset under `root` and returns `root`.

  The ILSVRC folder layout goes to `root/train/<wnid>/` and `root/val/<wnid>/`; with `tfds=True` the
  same images also go to `root/tfds/imagenet2012/5.1.0/` as array_record files, readable with
  `tfds.data_source("imagenet2012", data_dir=root/"tfds")` or `tfds.builder_from_directory`.
  """
  wnids = tuple(DEFAULT_WNIDS if wnids is None else wnids)
  for wnid in wnids:
    class_by_wnid(wnid)  # KeyError naming an unknown wnid
  if len(set(wnids)) != len(wnids):
    raise ValueError(f"duplicate wnids in {list(wnids)}")
  if min(train_per_class, val_per_class) < 1 or image_size < 8:
    raise ValueError(
      f"need >= 1 image per class and image_size >= 8, got train_per_class="
      f"{train_per_class}, val_per_class={val_per_class}, image_size={image_size}"
    )
  root = Path(root)
  counts = {"train": train_per_class, "val": val_per_class}
  for split in SPLITS:
    for wnid, name, data in _examples(wnids, split, counts[split], image_size, seed):
      atomic_write_bytes(root / split / wnid / name, data)
  if tfds:
    _build_tfds(root / "tfds", wnids, counts, image_size, seed)
  atomic_write_json(
    root / COMPLETE_FILE,
    {
      "wnids": list(wnids),
      "train_per_class": train_per_class,
      "val_per_class": val_per_class,
      "image_size": image_size,
      "seed": seed,
      "tfds": tfds,
    },
  )
  return root


def _build_tfds(data_dir: Path, wnids, counts, image_size, seed) -> None:
  # tfds' imagenet2012 calls the ILSVRC val split "validation".
  examples = {
    tfds_split: lambda split=split: _examples(wnids, split, counts[split], image_size, seed)
    for tfds_split, split in (("train", "train"), ("validation", "val"))
  }
  write_tfds_dataset(data_dir, TFDS_NAME, TFDS_VERSION, [c.wnid for c in load_classes()], examples)


def write_tfds_dataset(
  data_dir: str | os.PathLike, name: str, version: str, label_names: Sequence[str], examples: Mapping[str, Callable]
) -> Path:
  """Prepares tfds dataset `name` as array_record under `data_dir` with tfds' image-classification features
  (image: JPEG, label: ClassLabel of `label_names`, file_name), as `tfds build` would; `examples[split]()`
  yields its (label name, file name, JPEG bytes). Returns `data_dir`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import, tfds only)

  dataset_name = name

  class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """JPEG images with the features of tfds' image-classification datasets (image, label, file_name)."""

    name = dataset_name
    VERSION = tfds.core.Version(version)
    # tfds derives this from the package's resources via `importlib_resources`, a backport that is not
    # installed on Python >= 3.9 and not needed here: the builder's code is this file.
    code_path = Path(__file__)

    def _info(self):
      return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
          {
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=list(label_names)),
            "file_name": tfds.features.Text(),
          }
        )
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in examples}

    def _generate_examples(self, split):
      for label, file_name, data in examples[split]():
        # Encoded JPEG bytes: tfds stores them as they are, no TensorFlow needed to encode.
        yield file_name, {"image": data, "label": label, "file_name": file_name}

  builder = Builder(data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  )
  return Path(data_dir)
