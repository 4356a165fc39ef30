"""Synthetic ImageNet, both source layouts, the study's splits and the exclusion list."""

import json
import math
import sys

import numpy as np
import pytest
from PIL import Image

from jax_aug.data import sources, subsets
from jax_aug.data.imagenet_classes import class_by_wnid
from jax_aug.data.synthetic import DEFAULT_WNIDS, make_synthetic_imagenet
from jax_aug.io import ImageDecodeError

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from configs.base import data as data_config  # pylint: disable=g-import-not-at-top,wrong-import-position

TRAIN, VAL = 24, 6


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  root = tmp_path_factory.mktemp("synthetic")
  return make_synthetic_imagenet(root, train_per_class=TRAIN, val_per_class=VAL, image_size=32, seed=0, tfds=True)


def _pixels(path):
  return np.asarray(Image.open(path).convert("RGB"), np.float32)


def test_synthetic_layout_and_determinism(synthetic, tmp_path):
  for split, n in (("train", TRAIN), ("val", VAL)):
    assert sorted(p.name for p in (synthetic / split).iterdir()) == sorted(DEFAULT_WNIDS)
    for wnid in DEFAULT_WNIDS:
      files = sorted((synthetic / split / wnid).glob("*.JPEG"))
      assert len(files) == n
      assert Image.open(files[0]).format == "JPEG" and Image.open(files[0]).size == (32, 32)
  # Image i of a class depends on (seed, split, class, i) and the class list, not on the image counts.
  again = make_synthetic_imagenet(tmp_path / "a", train_per_class=2, val_per_class=1, image_size=32, seed=0)
  name = f"{DEFAULT_WNIDS[1]}/{DEFAULT_WNIDS[1]}_1.JPEG"
  assert (again / "train" / name).read_bytes() == (synthetic / "train" / name).read_bytes()
  other = make_synthetic_imagenet(tmp_path / "b", train_per_class=2, val_per_class=1, image_size=32, seed=1)
  assert (other / "train" / name).read_bytes() != (synthetic / "train" / name).read_bytes()
  with pytest.raises(KeyError, match="n00000001"):
    make_synthetic_imagenet(tmp_path / "c", wnids=["n00000001"], train_per_class=1, val_per_class=1, image_size=32, seed=0)


def test_synthetic_classes_are_learnable(synthetic):
  """A nearest-class-mean classifier on colour histograms (position-invariant, like a CNN's pooled
  features), fit on train, scores far above chance on val: the classes carry learnable signal."""

  def histogram(path):
    bins = (np.asarray(Image.open(path), np.int64) // 32).reshape(-1, 3) @ np.array([64, 8, 1])
    return np.bincount(bins, minlength=512) / bins.size

  def features(split):
    records = sources.folder_records(synthetic / split)
    x = np.stack([histogram(r["path"]) for r in records])
    return x, np.array([DEFAULT_WNIDS.index(r["wnid"]) for r in records])

  x_train, y_train = features("train")
  x_val, y_val = features("val")
  means = np.stack([x_train[y_train == c].mean(0) for c in range(len(DEFAULT_WNIDS))])
  predicted = np.argmin(((x_val[:, None] - means[None]) ** 2).sum(-1), axis=1)
  assert (predicted == y_val).mean() >= 0.75  # chance: 1/6


def test_folder_and_tfds_sources_hold_the_same_images(synthetic):
  folder = sources.folder_records(synthetic / "train")
  assert len(folder) == TRAIN * len(DEFAULT_WNIDS)
  assert folder == sorted(folder, key=lambda r: (r["wnid"], r["path"]))
  tfds_train = sources.tfds_records(synthetic / "tfds", "train")
  assert len(tfds_train) == len(folder)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  raw = tfds.data_source(
    "imagenet2012", data_dir=str(synthetic / "tfds"), split="train", decoders={"image": tfds.decode.SkipDecoding()}
  )
  reader = sources.ImageReader(synthetic / "tfds")
  for record in tfds_train[::7]:
    _, index = sources.parse_tfds_path(record["path"])
    example = raw[index]
    file = synthetic / "train" / record["wnid"] / example["file_name"].decode()
    assert example["image"] == file.read_bytes()  # the very JPEG bytes of the folder layout
    assert example["label"] == class_by_wnid(record["wnid"]).index  # the standard ILSVRC2012 label
    assert np.array_equal(np.asarray(reader(record["path"])), np.asarray(sources.ImageReader()(str(file))))
  only = sources.tfds_records(synthetic / "tfds", "validation", wnids=[DEFAULT_WNIDS[2]])
  assert len(only) == VAL and {r["wnid"] for r in only} == {DEFAULT_WNIDS[2]}


def test_source_errors_name_the_bad_item(synthetic, tmp_path):
  with pytest.raises(ValueError, match="unknown WordNet id 'n99999999'"):
    sources.folder_records(synthetic / "train", ["n99999999"])
  with pytest.raises(ValueError, match="unknown WordNet id 'n99999999'"):
    sources.tfds_records(synthetic / "tfds", "train", wnids=["n99999999"])
  with pytest.raises(ValueError, match="holds no images of class 'n01440764'"):
    sources.tfds_records(synthetic / "tfds", "train", wnids=["n01440764"])
  bad = tmp_path / "train"
  (bad / "n01440764").mkdir(parents=True)
  with pytest.raises(ValueError, match=r"class folder .*n01440764 holds no images"):
    sources.folder_records(bad)
  (bad / "n01440764" / "x.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  (bad / "cats").mkdir()
  with pytest.raises(ValueError, match="unknown WordNet id 'cats'"):
    sources.folder_records(bad)
  with pytest.raises(FileNotFoundError, match="n01443537"):
    sources.folder_records(bad, ["n01443537"])
  with pytest.raises(ImageDecodeError, match=r"n01440764/x\.JPEG"):
    sources.ImageReader()(str(bad / "n01440764" / "x.JPEG"))
  with pytest.raises(ValueError, match="no tfds data_dir"):
    sources.ImageReader()("tfds://train/0")
  with pytest.raises(IndexError, match="tfds://train/100000"):
    sources.ImageReader(synthetic / "tfds")("tfds://train/100000")


def _fake_train(counts):
  return [{"wnid": w, "path": f"/imagenet/train/{w}/{w}_{i}.JPEG"} for w, n in counts.items() for i in range(n)]


def test_fraction_sizes_are_hand_checked():
  assert [subsets.fraction_size(n, 0.1) for n in (732, 1300, 1000, 1001, 7)] == [74, 130, 100, 101, 1]
  assert [subsets.fraction_size(n, 0.2) for n in (732, 1300, 1000)] == [147, 260, 200]


def test_splits_sizes_disjointness_containment_and_determinism():
  rng = np.random.default_rng(0)
  wnids = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"]
  counts = {w: int(n) for w, n in zip(wnids, rng.integers(732, 1301, len(wnids)))}
  counts[wnids[0]], counts[wnids[1]] = 732, 1300  # the extremes of ILSVRC2012
  splits = subsets.make_splits(_fake_train(counts), seed=0)
  for wnid, n in counts.items():
    subset = {r["path"] for r in splits["subset"] if r["wnid"] == wnid}
    validation = {r["path"] for r in splits["validation"] if r["wnid"] == wnid}
    subset_20 = {r["path"] for r in splits["subset_20"] if r["wnid"] == wnid}
    assert len(subset) == len(validation) == math.ceil(0.1 * n)
    assert len(subset_20) == math.ceil(0.2 * n)
    assert not subset & validation and not subset_20 & validation and subset <= subset_20
  assert subsets.per_class_counts(splits["subset"])[wnids[0]] == 74
  assert subsets.per_class_counts(splits["subset"])[wnids[1]] == 130
  shuffled = _fake_train(counts)[::-1]
  assert subsets.make_splits(shuffled, seed=0) == splits  # order of the file list does not matter
  assert subsets.make_splits(_fake_train(counts), seed=1)["subset"] != splits["subset"]
  alone = subsets.make_splits(_fake_train({wnids[3]: counts[wnids[3]]}), seed=0)
  assert alone["subset"] == [r for r in splits["subset"] if r["wnid"] == wnids[3]]
  with pytest.raises(ValueError, match="class n01440764 has 1 train images"):
    subsets.make_splits(_fake_train({"n01440764": 1}), seed=0)


def test_exclusions_and_study_labels(tmp_path):
  path = tmp_path / subsets.EXCLUSIONS_FILE
  assert subsets.load_exclusions(path) == {}
  subsets.write_exclusions(path, {"n01491361": "retrieval returned 97 of 130 images"})
  excluded = subsets.load_exclusions(path)
  assert excluded == {"n01491361": "retrieval returned 97 of 130 images"}
  assert subsets.study_wnids(["n03180011", "n01491361", "n01443537"], excluded) == ["n01443537", "n03180011"]
  assert len(subsets.study_wnids(None, excluded)) == 999
  path.write_text(json.dumps({"n12345678": "x"}))
  with pytest.raises(ValueError, match="unknown WordNet id 'n12345678'"):
    subsets.load_exclusions(path)


def test_prepare_splits_both_sources_with_exclusion(synthetic, tmp_path):
  config = data_config.get("tiny")
  config.root = str(synthetic)
  config.tfds_data_dir = str(synthetic / "tfds")
  config.synthetic = None
  config.excluded_classes = str(tmp_path / subsets.EXCLUSIONS_FILE)
  subsets.write_exclusions(config.excluded_classes, {DEFAULT_WNIDS[0]: "test exclusion"})
  infos = []
  for source in ("folder", "tfds"):
    config.source = source
    paths = subsets.prepare_splits(config, tmp_path / source)
    info = json.loads((tmp_path / source / "splits" / "info.json").read_text())
    infos.append(info["split_per_class"])
    assert info["wnids"] == list(DEFAULT_WNIDS[1:])
    for name, path in paths.items():
      records = subsets.read_manifest(path)
      assert records and DEFAULT_WNIDS[0] not in {r["wnid"] for r in records}, name
    test = subsets.read_manifest(paths["test"])
    assert subsets.per_class_counts(test) == {w: VAL for w in DEFAULT_WNIDS[1:]}
  assert infos[0] == infos[1]
  assert infos[0]["subset"] == {w: math.ceil(0.1 * TRAIN) for w in DEFAULT_WNIDS[1:]}


def test_manifest_paths_resolve_and_missing_files_are_named(tmp_path):
  image = tmp_path / "images" / "a.png"
  image.parent.mkdir()
  Image.new("RGB", (4, 4)).save(image)
  manifest = tmp_path / "split.jsonl"
  subsets.write_manifest(
    manifest, [{"wnid": "n01491361", "path": "images/a.png"}, {"wnid": "n01491361", "path": "tfds://train/3"}]
  )
  records = subsets.read_manifest(manifest)
  assert records[0]["path"] == str(image.resolve()) and records[1]["path"] == "tfds://train/3"
  image.unlink()
  with pytest.raises(FileNotFoundError, match=r"split.jsonl:1: listed image .*images/a.png"):
    subsets.read_manifest(manifest)
