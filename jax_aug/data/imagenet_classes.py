"""The 1000 ILSVRC2012 classes (WordNet lemmas, definition, hypernym chain) and Places365 scene names.

The class table is package data made by scripts/make_imagenet_classes.py; nothing here needs a network.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class ClassInfo:
  """One class of a dataset (jax_aug.data.classes): on ImageNet a WordNet synset of this table."""

  index: int  # position in the standard ILSVRC2012 order (sorted wnids), the label of the full dataset
  wnid: str  # the class id: the WordNet id on ImageNet, the folder / label name elsewhere (jax_aug.data.classes)
  lemmas: tuple[str, ...]  # all synset lemmas in WordNet order (other datasets: the class's names)
  definition: str  # "" where the dataset has none
  hypernyms: tuple[str, ...]  # immediate parent first, up to 'entity'; () where the dataset has none
  extra_words: tuple[str, ...] = ()  # classes.json's prompt words, after the lemmas in the class name (ImageNet: none)

  @property
  def name(self) -> str:
    """The class name of the paper's simple prompt: all lemmas (then any extra words) joined by ', '."""
    return ", ".join(self.lemmas + self.extra_words)


@functools.cache
def load_classes() -> tuple[ClassInfo, ...]:
  # Package data shipped beside the modules (pyproject's package-data), made by
  # scripts/make_imagenet_classes.py.
  text = (Path(__file__).resolve().parents[1] / "assets" / "imagenet_classes.json").read_text(encoding="utf-8")
  return tuple(
    ClassInfo(
      index=c["index"],
      wnid=c["wnid"],
      lemmas=tuple(c["lemmas"]),
      definition=c["definition"],
      hypernyms=tuple(c["hypernyms"]),
    )
    for c in json.loads(text)
  )


@functools.cache
def _by_wnid() -> dict[str, ClassInfo]:
  return {c.wnid: c for c in load_classes()}


def class_by_wnid(wnid: str) -> ClassInfo:
  try:
    return _by_wnid()[wnid]
  except KeyError:
    raise KeyError(f"unknown WordNet id {wnid!r}: not one of the 1000 ILSVRC2012 classes") from None


@functools.cache
def places365_categories() -> tuple[str, ...]:
  """The 365 Places365 scene categories as prose ('airfield', 'airplane cabin', 'hockey arena', ...).

  Read from the file tensorflow-datasets ships, located without importing tfds (a slow import).
  """
  spec = importlib.util.find_spec("tensorflow_datasets")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("tensorflow_datasets is needed for the Places365 category names")
  path = Path(spec.submodule_search_locations[0]) / "image_classification" / "categories_places365.txt"
  return tuple(_scene_prose(line.strip()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _scene_prose(category: str) -> str:
  """'apartment_building/outdoor' -> 'outdoor apartment building', 'arena/hockey' -> 'hockey arena'."""
  scene, _, qualifier = category.partition("/")
  return " ".join(part for part in (qualifier, scene) if part).replace("_", " ")
