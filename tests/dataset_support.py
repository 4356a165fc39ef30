"""Small datasets other than ImageNet for the tests: class folders with any names (ImageFolder layout) and
a tfds dataset of another name, drawn with the synthetic ImageNet's painter (jax_aug.data.synthetic)."""

import io
import json
from pathlib import Path

import numpy as np

from jax_aug.data.synthetic import draw_image, write_tfds_dataset


def jpeg(class_position: int, num_classes: int, rng: np.random.Generator, size: int) -> bytes:
  buffer = io.BytesIO()
  draw_image(class_position, num_classes, rng, size).save(buffer, format="JPEG", quality=90)
  return buffer.getvalue()


def make_folder_dataset(root, names, splits: dict[str, int], *, image_size: int = 32, seed: int = 0) -> Path:
  """`root/<split>/<name>/<i>.jpg` for each split of `splits` ({split: images per class})."""
  root = Path(root)
  for split, per_class in splits.items():
    for position, name in enumerate(names):
      folder = root / split / name
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(per_class):
        rng = np.random.default_rng([seed, len(split), position, i])
        (folder / f"{i:03d}.jpg").write_bytes(jpeg(position, len(names), rng, image_size))
  return root


def write_classes_json(path, metadata: dict) -> Path:
  Path(path).write_text(json.dumps(metadata))
  return Path(path)


def make_tfds_dataset(data_dir, name: str, label_names, splits: dict[str, int], *, image_size: int = 16) -> dict:
  """A prepared tfds dataset `name` (array_record, tfds' image-classification features); returns
  {split: [(label name, file name, JPEG bytes)]} in the order written."""
  written = {}
  for split, per_class in splits.items():
    rng = np.random.default_rng(len(split))
    written[split] = [
      (label, f"{split}_{position}_{i}.jpg", jpeg(position, len(label_names), rng, image_size))
      for position, label in enumerate(label_names)
      for i in range(per_class)
    ]
  write_tfds_dataset(data_dir, name, "1.0.0", label_names, {s: (lambda s=s: written[s]) for s in written})
  return written
