"""The classes of the configured dataset: ids, labels, names and prompt metadata, whatever the dataset.

`config.data.dataset` names where the classes come from:

  "imagenet"       the 1000 ILSVRC2012 classes of the package table (jax_aug.data.imagenet_classes): WordNet
                   ids, lemmas, definitions, hypernyms, the standard label order (the default; either layout)
  "folder"         an ImageFolder layout `<root>/train/<class>/...`: the classes are the sorted folder names,
                   as torchvision's ImageFolder sorts them (label index = position)
  "tfds:<name>"    a tfds dataset prepared under `tfds_data_dir`: the classes are its builder's label names,
                   in the builder's label order

A class's id (`ClassInfo.wnid`: the WordNet id on ImageNet) is the name records, augmentation-set keys and
file names carry: on other datasets the folder or label name with each run of white space made one '_'
("golden retriever" -> "golden_retriever"); it must then be 1-100 characters of [A-Za-z0-9_.-] not starting
with '.'. An id shaped like a WordNet id ('n' and digits) must be an ILSVRC2012 wnid on any dataset.

Prompt metadata of folder and tfds datasets: by default one name per class, the folder or label name with
'_' read as a space ("golden_retriever" -> "golden retriever"), no definition and no hypernym. An optional
`classes.json` (`config.data.classes_file`) gives, per class (keyed by its folder / label name or its id),
`{"names": [...], "definition": "...", "hypernym": "...", "prompt_words": [...]}`, every field optional
but "names" non-empty when given; it must name every class of the data and no other. `prompt_words` follow
the names in the class name n of the prompts ("A photo of rose, flower."). Two classes with the same
name n are an error: prompts could not tell them apart.

Per-item randomness stays a function of the class alone: `class_seed` (the WordNet offset on ImageNet, a
hash of the id otherwise) seeds the splits and resampled sets, `ClassInfo.index` (the ILSVRC2012 label, or
the dataset's own label index) seeds prompts and sampling, so a study keeping fewer classes draws the same
items. The data stage stores the dataset's classes as `splits/classes.json` (`write_split_classes`); every
later stage reads them from there (`read_split_classes`; absent: ImageNet).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from jax_aug.data.imagenet_classes import ClassInfo, class_by_wnid, load_classes
from jax_aug.io import atomic_write_json, read_json

IMAGENET = "imagenet"
FOLDER = "folder"
TFDS_PREFIX = "tfds:"
CLASSES_FILE = "classes.json"  # in the splits folder, written by the data stage
# classes.json's per-class fields (all optional) and what they become.
METADATA_FIELDS = ("names", "definition", "hypernym", "prompt_words")
# Class ids become file names and key prefixes (jax_aug.data.augmentation_set): no separator, no leading '.'.
CLASS_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
WNID_RE = re.compile(r"n\d{8}")
WNID_LIKE_RE = re.compile(r"n\d+")  # an id of this shape must be a WordNet id: 'n' and 8 digits, an ILSVRC2012 class


def check_dataset_name(dataset: str) -> str:
  """`dataset` if it is "imagenet", "folder" or "tfds:<name>", else an error naming the choices."""
  if dataset in (IMAGENET, FOLDER) or (dataset.startswith(TFDS_PREFIX) and re.fullmatch(r"[a-z0-9_]+", tfds_name(dataset))):
    return dataset
  raise ValueError(
    f"unknown dataset {dataset!r}: expected 'imagenet', 'folder' or 'tfds:<name>' (e.g. 'tfds:oxford_flowers102')"
  )


def tfds_name(dataset: str) -> str:
  return dataset[len(TFDS_PREFIX) :]


def class_id(name: str) -> str:
  """The id of a class folder or label name: white space runs made '_', checked by `check_class_id`."""
  return check_class_id("_".join(str(name).split()), f"class name {name!r}")


def check_class_id(value: str, what: str = "class id") -> str:
  if not isinstance(value, str) or not CLASS_ID_RE.fullmatch(value):
    raise ValueError(
      f"bad {what} -> id {value!r}: a class id is 1-100 characters of [A-Za-z0-9_.-] not starting with '.'"
      " (rename the folder or label)"
    )
  if WNID_LIKE_RE.fullmatch(value) and not WNID_RE.fullmatch(value):
    raise ValueError(f"bad WordNet id {value!r}: expected 'n' followed by 8 digits, e.g. 'n01491361'")
  if WNID_RE.fullmatch(value):
    try:
      class_by_wnid(value)
    except KeyError as e:
      raise ValueError(f"{what}: {e.args[0]}") from None
  return value


def class_seed(class_id: str) -> int:
  """The class's term in per-class random streams: the WordNet offset of a wnid (ImageNet's rule,
  n01491361 -> 1491361), else the first 8 bytes of the id's SHA-256; either way a function of the id alone."""
  if WNID_RE.fullmatch(class_id):
    return int(class_id[1:])
  return int.from_bytes(hashlib.sha256(class_id.encode("utf-8")).digest()[:8], "big")


def default_names(name: str) -> tuple[str, ...]:
  """A folder or label name read as prose: '_' as a space, white space collapsed ('golden_retriever' ->
  'golden retriever')."""
  return (" ".join(name.replace("_", " ").split()),)


@dataclasses.dataclass(frozen=True)
class DatasetClasses:
  """The classes of one dataset, in label order (`classes[i].index == i` except on ImageNet, whose
  indices are the ILSVRC2012 labels of the 1000-class table even when a study keeps fewer)."""

  dataset: str
  classes: tuple[ClassInfo, ...]

  def __post_init__(self):
    check_dataset_name(self.dataset)
    _refuse_duplicates([c.wnid for c in self.classes], f"dataset {self.dataset}: class id")

  @functools.cached_property
  def _by_id(self) -> dict[str, ClassInfo]:
    return {c.wnid: c for c in self.classes}

  @property
  def ids(self) -> list[str]:
    return [c.wnid for c in self.classes]

  def __getitem__(self, class_id: str) -> ClassInfo:
    if self.dataset == IMAGENET:
      return class_by_wnid(class_id)
    try:
      return self._by_id[class_id]
    except KeyError:
      raise KeyError(f"unknown class {class_id!r}: not a class of dataset {self.dataset} ({self.ids[:5]}...)") from None

  def __contains__(self, class_id: str) -> bool:
    return class_id in self._by_id

  def ordered(self, class_ids: Iterable[str]) -> list[str]:
    """`class_ids` (each a class of the dataset) in label order."""
    return sorted(set(class_ids), key=lambda c: self[c].index)

  def lacking(self, field: str) -> list[str]:
    """The ids of the classes without a value for `field` ('definition' or 'hypernyms')."""
    return [c.wnid for c in self.classes if not getattr(c, field)]

  def to_json(self) -> dict:
    """ImageNet: its name only (the table is package data); other datasets: every class."""
    if self.dataset == IMAGENET:
      return {"dataset": IMAGENET}
    return {"dataset": self.dataset, "classes": [dataclasses.asdict(c) for c in self.classes]}

  @classmethod
  def from_json(cls, data: Mapping) -> DatasetClasses:
    if data["dataset"] == IMAGENET:
      return imagenet()
    fields = {f.name for f in dataclasses.fields(ClassInfo)}
    return cls(
      data["dataset"],
      tuple(
        ClassInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items() if k in fields})
        for c in data["classes"]
      ),
    )


@functools.cache
def imagenet() -> DatasetClasses:
  return DatasetClasses(IMAGENET, load_classes())


def _refuse_duplicates(values: Sequence[str], what: str, names: Sequence[str] | None = None) -> None:
  seen: dict[str, int] = {}
  for position, value in enumerate(values):
    if value in seen:
      first = seen[value]
      origin = f" (from {names[first]!r} and {names[position]!r})" if names else ""
      raise ValueError(f"duplicate {what} {value!r}{origin}: every class needs its own")
    seen[value] = position


def from_names(
  dataset: str, names: Sequence[str], metadata: Mapping[str, Mapping] | None = None, *, where: str = ""
) -> DatasetClasses:
  """The classes of a folder or tfds dataset from its folder / label names in label order, with the
  optional classes.json `metadata` (see the module docstring); `where` names the metadata file in errors."""
  names = list(names)
  if not names:
    raise ValueError(f"dataset {dataset}: no classes")
  ids = [class_id(n) for n in names]
  _refuse_duplicates(ids, f"class id in dataset {dataset}", names)
  entries = _match_metadata(names, ids, metadata, where) if metadata is not None else [{} for _ in names]
  classes = tuple(
    ClassInfo(
      index=index,
      wnid=ids[index],
      lemmas=tuple(entry.get("names") or default_names(names[index])),
      definition=entry.get("definition", ""),
      hypernyms=(entry["hypernym"],) if entry.get("hypernym") else (),
      extra_words=tuple(entry.get("prompt_words", ())),
    )
    for index, entry in enumerate(entries)
  )
  _refuse_duplicates([c.name for c in classes], f"class name in dataset {dataset}", names)
  return DatasetClasses(dataset, classes)


def _match_metadata(names: list[str], ids: list[str], metadata: Mapping[str, Mapping], where: str) -> list[dict]:
  """classes.json's entry of each class (keyed by its name or its id), every entry checked."""
  if not isinstance(metadata, Mapping):
    raise ValueError(f"{where}: expected a JSON object {{class name: {{{', '.join(METADATA_FIELDS)}}}}}")
  key_of = {}
  for name, cid in zip(names, ids):
    keys = [k for k in dict.fromkeys((name, cid)) if k in metadata]
    if len(keys) > 1:
      raise ValueError(f"{where}: class {name!r} is given twice, as {keys[0]!r} and {keys[1]!r}")
    if not keys:
      raise ValueError(f"{where}: class {name!r} of the data is missing (classes.json must name every class)")
    key_of[name] = keys[0]
  unknown = sorted(set(metadata) - set(key_of.values()))
  if unknown:
    raise ValueError(f"{where}: class {unknown[0]!r} is not a class of the data (classes: {names[:8]}...)")
  return [_checked_entry(metadata[key_of[name]], f"{where}: class {name!r}") for name in names]


def _checked_entry(entry, where: str) -> dict:
  if not isinstance(entry, Mapping):
    raise ValueError(f"{where}: expected an object with fields {METADATA_FIELDS}, got {type(entry).__name__}")
  unknown = sorted(set(entry) - set(METADATA_FIELDS))
  if unknown:
    raise ValueError(f"{where}: unknown field {unknown[0]!r}: expected some of {METADATA_FIELDS}")
  for field in ("definition", "hypernym"):
    if field in entry and not isinstance(entry[field], str):
      raise ValueError(f"{where}: {field!r} must be a string, got {entry[field]!r}")
  for field in ("names", "prompt_words"):
    value = entry.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
      raise ValueError(f"{where}: {field!r} must be a list of non-empty strings, got {value!r}")
  if "names" in entry and not entry["names"]:
    raise ValueError(f"{where}: 'names' must name the class at least once")
  return dict(entry)


def read_metadata(path: str | os.PathLike) -> dict:
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"class metadata file not found: {path} (config.data.classes_file)")
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None


def class_folders(split_dir: str | os.PathLike) -> list[str]:
  """The class folder names of `split_dir`, sorted as torchvision's ImageFolder sorts them."""
  split_dir = Path(split_dir)
  if not split_dir.is_dir():
    raise FileNotFoundError(f"split folder not found: {split_dir} (expected <root>/train/<class>/ images)")
  names = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
  if not names:
    raise ValueError(f"{split_dir}: no class folders (expected one folder of images per class)")
  return names


def dataset_classes(config, root: str | os.PathLike, tfds_data_dir: str | os.PathLike) -> DatasetClasses:
  """The classes of the data block `config`'s dataset (configs/base/data.py): ImageNet's table, the
  folders of `<root>/train/`, or the label names of the tfds dataset under `tfds_data_dir`."""
  dataset = check_dataset_name(config.get("dataset", IMAGENET))
  classes_file = config.get("classes_file", "")
  if dataset == IMAGENET:
    if classes_file:
      raise ValueError(
        f"config.data.classes_file ({classes_file}) is for folder and tfds datasets: ImageNet has its own table"
      )
    return imagenet()
  metadata = read_metadata(classes_file) if classes_file else None
  if dataset == FOLDER:
    names = class_folders(Path(root) / "train")
  else:
    from jax_aug.data.sources import tfds_label_names  # pylint: disable=g-import-not-at-top  (tfds: slow import)

    names = tfds_label_names(str(tfds_data_dir), tfds_name(dataset))
  return from_names(dataset, names, metadata, where=str(classes_file))


def write_split_classes(split_dir: str | os.PathLike, classes: DatasetClasses) -> Path:
  path = Path(split_dir) / CLASSES_FILE
  atomic_write_json(path, classes.to_json())
  return path


def read_split_classes(split_dir: str | os.PathLike) -> DatasetClasses:
  """The classes the data stage stored beside the splits; ImageNet's when the folder has none (splits
  written before datasets other than ImageNet existed, or by hand)."""
  path = Path(split_dir) / CLASSES_FILE
  return DatasetClasses.from_json(read_json(path)) if path.is_file() else imagenet()


def require_fields(strategy: str, needs: Sequence[str], classes: DatasetClasses) -> None:
  """Refuses a prompt strategy that needs class fields (`needs`: 'definition', 'hypernyms') some class
  of the dataset lacks, naming the strategy, the dataset, the field and the classes."""
  for field in needs:
    lacking = classes.lacking(field)
    if lacking:
      key = {"hypernyms": "hypernym"}.get(field, field)
      raise ValueError(
        f"prompt strategy {strategy!r} needs each class's {key}, but dataset {classes.dataset} has none for"
        f" {len(lacking)} of {len(classes.classes)} classes ({', '.join(lacking[:5])}): give {key!r} for every"
        " class in classes.json (config.data.classes_file), or choose another prompt strategy"
      )
