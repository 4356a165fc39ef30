"""Image records from the two layouts (class folders, prepared tfds), and reading one record's image, both
without TensorFlow.

- Folder layout (ILSVRC's or any ImageFolder): `<root>/<split>/<class>/*.JPEG`. Records `{"wnid": class
  id, "path": absolute file path}`.
- A tfds dataset prepared as array_record (`imagenet2012` or any other with `image` and `label`
  features): records `{"wnid": class id, "path": "tfds://<split>/<index>"}`, read with
  `tfds.data_source`; the image bytes are decoded by `jax_aug.io.decode_image` (bounded), not by tfds.

The record field "wnid" holds the class id (jax_aug.data.classes: the WordNet id on ImageNet). Labels are
never part of a record: the pipeline maps class id -> label from the study's class list.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from jax_aug.data import classes as classes_lib
from jax_aug.data.classes import DatasetClasses
from jax_aug.io import DecodeOptions, decode_image, load_image_file

log = logging.getLogger(__name__)

TFDS_SCHEME = "tfds://"
# What torchvision's ImageFolder accepts (torchvision.datasets.folder.IMG_EXTENSIONS), in any case.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_TFDS_PATH_RE = re.compile(r"tfds://([A-Za-z0-9_]+)/(\d+)")


def tfds_path(split: str, index: int) -> str:
  return f"{TFDS_SCHEME}{split}/{index}"


def parse_tfds_path(path: str) -> tuple[str, int]:
  match = _TFDS_PATH_RE.fullmatch(path)
  if not match:
    raise ValueError(f"bad tfds record path {path!r}: expected 'tfds://<split>/<index>'")
  return match.group(1), int(match.group(2))


def _check_classes(class_ids: Iterable[str], classes: DatasetClasses, where: str) -> None:
  for cid in class_ids:
    try:
      classes[cid]
    except KeyError as e:
      raise ValueError(f"{where}: {e.args[0]}") from None


def folder_records(
  split_dir: str | os.PathLike, wnids: Sequence[str] | None = None, classes: DatasetClasses | None = None
) -> list[dict]:
  """All images of `split_dir/<class>/`, sorted by class then file name; files of other types are ignored
  with a warning that counts them (`folder_listing` returns them)."""
  records, ignored = folder_listing(split_dir, wnids, classes)
  if ignored:
    log.warning(
      "%s: ignored %d files that are not images (%s), e.g. %s",
      split_dir,
      len(ignored),
      "/".join(IMAGE_SUFFIXES),
      ", ".join(ignored[:3]),
    )
  return records


def folder_listing(
  split_dir: str | os.PathLike, wnids: Sequence[str] | None = None, classes: DatasetClasses | None = None
) -> tuple[list[dict], list[str]]:
  """(records of every image of `split_dir/<class>/` sorted by class then file name, the other files).

  Images are the files whose suffix is one of IMAGE_SUFFIXES in any case, as for torchvision's
  ImageFolder. A record's class is its folder's id (jax_aug.data.classes.class_id: the folder name, white
  space made '_'). `wnids=None` takes every class folder; otherwise exactly the given class ids, each of
  which must exist. A class folder without images, or one that is not a class of `classes` (default:
  ImageNet's, so a folder not named by an ILSVRC2012 wnid), is an error naming it.
  """
  classes = classes or classes_lib.imagenet()
  split_dir = Path(split_dir).resolve()
  if not split_dir.is_dir():
    raise FileNotFoundError(f"split folder not found: {split_dir}")
  folders = {}
  for name in classes_lib.class_folders(split_dir):
    cid = classes_lib.class_id(name)
    if cid in folders:
      raise ValueError(f"{split_dir}: folders {folders[cid].name!r} and {name!r} are the same class {cid!r}")
    folders[cid] = split_dir / name
  wnids = sorted(folders) if wnids is None else list(wnids)
  _check_classes(wnids, classes, str(split_dir))
  records, ignored = [], []
  for cid in sorted(wnids):
    if cid not in folders:
      raise FileNotFoundError(f"class folder not found: {split_dir / cid}")
    class_dir = folders[cid]
    files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
      raise ValueError(f"class folder {class_dir} holds no images ({'/'.join(IMAGE_SUFFIXES)})")
    records.extend({"wnid": cid, "path": str(p)} for p in files)
    ignored.extend(sorted(str(p) for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES))
  return records, ignored


_tfds_sources: dict[tuple[str, str, str], object] = {}
# grain reads elements from several threads of each worker process; their first reads would import
# tensorflow_datasets concurrently, and its lazy imports deadlock on the import locks. One lock makes the
# first opening (and the import) happen in one thread while the others wait.
_tfds_lock = threading.Lock()


def check_tfds_prepared(data_dir: str | os.PathLike, name: str) -> Path:
  """The folder of the newest prepared version of tfds dataset `name` under `data_dir`; an error saying
  how to prepare it when there is none (reading never downloads)."""
  versions = sorted((p.parent for p in Path(data_dir, name).glob("*/dataset_info.json")), key=lambda p: p.name)
  if not versions:
    raise FileNotFoundError(
      f"tfds dataset {name!r} is not prepared under {data_dir} (no {name}/<version>/dataset_info.json): prepare"
      f" it once with tensorflow-datasets, e.g. `tfds build {name} --data_dir={data_dir}` (see docs/data.md)"
    )
  return versions[-1]


def _tfds_source(data_dir: str, name: str, split: str):
  key = (data_dir, name, split)
  with _tfds_lock:
    if key not in _tfds_sources:
      check_tfds_prepared(data_dir, name)
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import, tfds only)

      _tfds_sources[key] = tfds.data_source(
        name, data_dir=data_dir, split=split, download=False, decoders={"image": tfds.decode.SkipDecoding()}
      )
    return _tfds_sources[key]


def tfds_records(
  data_dir: str | os.PathLike,
  split: str,
  *,
  name: str = "imagenet2012",
  wnids: Sequence[str] | None = None,
  classes: DatasetClasses | None = None,
  batch_size: int = 256,
) -> list[dict]:
  """Records of a prepared tfds dataset split (e.g. 'train', 'validation'), optionally only the class ids
  `wnids`; a record's class is the id of its label name (jax_aug.data.classes.class_id), a class of
  `classes` (default: ImageNet's).

  Finding each example's class reads every record once (array_record holds whole serialized
  examples); on real ImageNet train that is one pass over ~140 GB, done once when the split manifests
  are written.
  """
  classes = classes or classes_lib.imagenet()
  source = _tfds_source(str(data_dir), name, split)
  label_ids = [classes_lib.class_id(n) for n in tfds_label_names(str(data_dir), name)]
  keep = None if wnids is None else set(wnids)
  if keep is not None:
    _check_classes(keep, classes, f"tfds {name} {split}")
    missing = keep - set(label_ids)
    if missing:
      raise ValueError(f"tfds {name} has no class {sorted(missing)[0]!r}")
  records = []
  for start in tqdm(
    range(0, len(source), batch_size),
    desc=f"listing tfds {name}/{split}",
    unit="batch",
    disable=len(source) <= 10 * batch_size,
  ):
    indices = list(range(start, min(start + batch_size, len(source))))
    for index, example in zip(indices, source.__getitems__(indices)):
      cid = label_ids[int(example["label"])]
      if keep is None or cid in keep:
        records.append({"wnid": cid, "path": tfds_path(split, index)})
  if keep is not None:
    empty = keep - {r["wnid"] for r in records}
    if empty:
      raise ValueError(f"tfds {name} {split} holds no images of class {sorted(empty)[0]!r}")
  records.sort(key=lambda r: (r["wnid"], int(r["path"].rsplit("/", 1)[1])))
  return records


@functools.cache
def tfds_label_names(data_dir: str, name: str) -> tuple[str, ...]:
  """The label names of prepared tfds dataset `name`, in label order (its `label` feature's)."""
  check_tfds_prepared(data_dir, name)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return tuple(tfds.builder(name, data_dir=data_dir).info.features["label"].names)


@functools.cache
def tfds_splits(data_dir: str, name: str) -> tuple[str, ...]:
  """The split names of prepared tfds dataset `name` ('train', 'validation', 'test', ...)."""
  check_tfds_prepared(data_dir, name)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return tuple(tfds.builder(name, data_dir=data_dir).info.splits)


class ImageReader:
  """Reads the image of a record path: a file, or `tfds://split/index` from `tfds_data_dir`.

  Holds only strings and the decode options, so grain can pickle it into worker processes; each process
  opens the tfds data sources lazily on first use. The data check (`jax_aug.data.check`) decodes with the
  same reader as training.
  """

  def __init__(
    self,
    tfds_data_dir: str | os.PathLike | None = None,
    tfds_name: str = "imagenet2012",
    options: DecodeOptions = DecodeOptions(),
  ):
    self.tfds_data_dir = None if tfds_data_dir is None else str(tfds_data_dir)
    self.tfds_name = tfds_name
    self.options = options

  def __call__(self, path: str) -> Image.Image:
    if not path.startswith(TFDS_SCHEME):
      return load_image_file(path, **self.options.as_kwargs())
    split, index = parse_tfds_path(path)
    if self.tfds_data_dir is None:
      raise ValueError(f"record {path} is a tfds record but no tfds data_dir was given")
    source = _tfds_source(self.tfds_data_dir, self.tfds_name, split)
    if index >= len(source):
      raise IndexError(f"record {path}: tfds {self.tfds_name}/{split} has only {len(source)} examples")
    return decode_image(source[index]["image"], source=f"{path} ({self.tfds_data_dir})", **self.options.as_kwargs())
