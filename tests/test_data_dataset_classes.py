"""Datasets other than ImageNet (jax_aug/data/classes.py): class folders with any names and tfds datasets
by name, their classes, labels, prompts, splits and the specific errors; ImageNet's rules are unchanged."""

import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torchvision
from dataset_support import make_folder_dataset, make_tfds_dataset, write_classes_json
from PIL import Image

from jax_aug.data import classes, prompts, subsets
from jax_aug.io import read_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs.base import data as data_config  # pylint: disable=g-import-not-at-top,wrong-import-position

NAMES = ("golden_retriever", "Tabby Cat", "rose")
METADATA = {
  "golden_retriever": {"names": ["golden retriever", "golden"], "definition": "a dog with a golden coat", "hypernym": "dog"},
  "Tabby Cat": {"definition": "a striped cat", "hypernym": "cat", "prompt_words": ["pet"]},
  "rose": {"names": ["rose"], "definition": "a thorny flower", "hypernym": "flower"},
}


def _config(root, **fields):
  config = data_config.get("paper")  # real data (no synthetic draw), every class found
  for key, value in {"dataset": "folder", "root": str(root), "tfds_data_dir": "", **fields}.items():
    config[key] = value
  return config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return make_folder_dataset(tmp_path_factory.mktemp("folder"), NAMES, {"train": 20})


def test_folder_classes_follow_imagefolder_and_names_make_the_prompts(folder, tmp_path):
  found = subsets.configured_classes(_config(folder), tmp_path)
  # Label order: torchvision's ImageFolder on the same folder is the reference.
  reference = torchvision.datasets.ImageFolder(str(folder / "train")).class_to_idx
  assert {name: found[classes.class_id(name)].index for name in NAMES} == reference
  assert found.ids == ["Tabby_Cat", "golden_retriever", "rose"]
  assert [prompts.build_prompt("simple", c, 0, 0) for c in found.classes] == [
    "A photo of Tabby Cat.",
    "A photo of golden retriever.",
    "A photo of rose.",
  ]
  assert prompts.build_prompt("simple_no_ws", found["golden_retriever"], 0, 0) == "A photo of goldenretriever."
  assert prompts.build_prompt("clip_templates", found["Tabby_Cat"], 3, 0) in {
    t.format("TabbyCat") for t in prompts.CLIP_IMAGENET_TEMPLATES
  }
  with pytest.raises(ValueError, match=r"prompt strategy 'sariyildiz' needs each class's definition, but dataset folder"):
    prompts.check_strategy("sariyildiz", found)


def test_classes_json_names_definitions_hypernyms_and_prompt_words(folder, tmp_path):
  config = _config(folder, classes_file=str(write_classes_json(tmp_path / "classes.json", METADATA)))
  found = subsets.configured_classes(config, tmp_path)
  retriever, cat = found["golden_retriever"], found["Tabby_Cat"]
  assert prompts.build_prompt("simple", retriever, 0, 0) == "A photo of golden retriever, golden."
  assert prompts.build_prompt("simple", retriever, 0, 0, lemmas="first") == "A photo of golden retriever."
  assert prompts.build_prompt("simple_no_ws", cat, 0, 0) == "A photo of TabbyCat,pet."  # default name + prompt word
  prompts.check_strategy("sariyildiz", found)
  assert prompts.build_prompt("sariyildiz", retriever, 1, 0) == "golden retriever, golden, dog"
  assert prompts.build_prompt("sariyildiz", cat, 4, 0) == "Tabby Cat, pet, a striped cat"


def test_folder_splits_draw_the_missing_test_split_from_train(folder, tmp_path):
  paths = subsets.prepare_splits(_config(folder), tmp_path)
  split = {name: subsets.read_manifest(p) for name, p in paths.items()}
  info = read_json(tmp_path / "splits" / "info.json")
  assert info["wnids"] == ["Tabby_Cat", "golden_retriever", "rose"]  # label = position (ImageFolder's order)
  # 20 per class: test ceil(0.1 * 20) = 2 held out first, then of the 18 left subset = validation =
  # ceil(0.1 * 18) = 2 and subset_20 = ceil(0.2 * 18) = 4.
  expected = {"test": 2, "subset": 2, "validation": 2, "subset_20": 4}
  for name, count in expected.items():
    assert subsets.per_class_counts(split[name]) == {w: count for w in info["wnids"]}, name
  test = {r["path"] for r in split["test"]}
  assert not test & {r["path"] for n in ("subset", "validation", "subset_20") for r in split[n]}
  assert all(Path(r["path"]).parent.name == {"Tabby_Cat": "Tabby Cat"}.get(r["wnid"], r["wnid"]) for r in split["test"])
  stored = classes.read_split_classes(tmp_path / "splits")
  assert stored == subsets.configured_classes(_config(folder), tmp_path)
  # Per-class streams are functions of the class id alone: ImageNet's WordNet offset, else its SHA-256.
  assert classes.class_seed("n01491361") == 1491361
  assert classes.class_seed("rose") == int(hashlib.sha256(b"rose").hexdigest()[:16], 16)


def test_folder_test_split_is_test_then_val(tmp_path):
  root = make_folder_dataset(tmp_path / "d", ("ant", "bee"), {"train": 4, "val": 1, "test": 2}, image_size=8)
  paths = subsets.prepare_splits(_config(root), tmp_path / "w")
  test = subsets.read_manifest(paths["test"])
  assert sorted(Path(r["path"]).relative_to(root).as_posix() for r in test) == [
    "test/ant/000.jpg",
    "test/ant/001.jpg",
    "test/bee/000.jpg",
    "test/bee/001.jpg",
  ]


def test_tfds_dataset_by_name_reads_labels_splits_and_images(tmp_path):
  labels = ["pink primrose", "globe thistle", "sunflower"]
  written = make_tfds_dataset(tmp_path / "tfds", "tiny_flowers", labels, {"train": 10, "test": 2})
  config = _config(tmp_path / "unused", dataset="tfds:tiny_flowers", tfds_data_dir=str(tmp_path / "tfds"))
  paths = subsets.prepare_splits(config, tmp_path / "w")
  stored = classes.read_split_classes(tmp_path / "w" / "splits")
  # The builder's label order, not sorted: label index = the tfds label.
  assert [(c.index, c.wnid, c.name) for c in stored.classes] == [
    (0, "pink_primrose", "pink primrose"),
    (1, "globe_thistle", "globe thistle"),
    (2, "sunflower", "sunflower"),
  ]
  assert read_json(tmp_path / "w" / "splits" / "info.json")["wnids"] == ["pink_primrose", "globe_thistle", "sunflower"]
  test = subsets.read_manifest(paths["test"])
  assert subsets.per_class_counts(test) == {"globe_thistle": 2, "pink_primrose": 2, "sunflower": 2}
  reader = subsets.image_reader(config, tmp_path / "w")
  for record in test:
    index = int(record["path"].rsplit("/", 1)[1])
    label, _, data = next(e for e in written["test"] if e[1] == _file_name(reader, record, index))
    assert classes.class_id(label) == record["wnid"]
    assert np.array_equal(np.asarray(reader(record["path"])), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def _file_name(reader, record, index):
  from jax_aug.data.sources import _tfds_source

  return _tfds_source(reader.tfds_data_dir, reader.tfds_name, "test")[index]["file_name"].decode()


def test_specific_errors(folder, tmp_path):
  def classes_error(metadata, match):
    config = _config(folder, classes_file=str(write_classes_json(tmp_path / "bad.json", metadata)))
    with pytest.raises(ValueError, match=match):
      subsets.configured_classes(config, tmp_path)

  classes_error({**METADATA, "tulip": {}}, r"class 'tulip' is not a class of the data")
  classes_error({k: v for k, v in METADATA.items() if k != "rose"}, r"class 'rose' of the data is missing")
  classes_error(
    {**METADATA, "rose": {"names": ["golden"]}, "golden_retriever": {"names": ["golden"]}}, "duplicate class name"
  )
  classes_error({**METADATA, "rose": {"colour": "red"}}, r"class 'rose': unknown field 'colour'")
  classes_error({**METADATA, "Tabby_Cat": {}}, r"class 'Tabby Cat' is given twice")

  twins = tmp_path / "twins"
  make_folder_dataset(twins, ("golden retriever", "golden_retriever"), {"train": 1}, image_size=8)
  with pytest.raises(ValueError, match=r"duplicate class id in dataset folder 'golden_retriever' \(from 'golden retriever'"):
    subsets.configured_classes(_config(twins), tmp_path)

  empty = make_folder_dataset(tmp_path / "empty", ("ant",), {"train": 3}, image_size=8)
  (empty / "train" / "bee").mkdir()
  with pytest.raises(ValueError, match=r"class folder .*train/bee holds no images"):
    subsets.prepare_splits(_config(empty), tmp_path / "w")

  with pytest.raises(FileNotFoundError, match=r"tfds dataset 'oxford_flowers102' is not prepared under .*tfds build"):
    subsets.configured_classes(_config(tmp_path, dataset="tfds:oxford_flowers102", tfds_data_dir=str(tmp_path)), tmp_path)
  with pytest.raises(ValueError, match=r"unknown dataset 'flowers'"):
    subsets.configured_classes(_config(tmp_path, dataset="flowers"), tmp_path)
  with pytest.raises(ValueError, match=r"bad WordNet id 'n123'"):
    classes.class_id("n123")
  assert json.loads(json.dumps(classes.imagenet().to_json())) == {"dataset": "imagenet"}
