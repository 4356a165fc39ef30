"""Augmentation-set format and the resampler (paper Sec. 4: 5 sets with the subset's per-class counts)."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from jax_aug.data import augmentation_set as aug

WNIDS = ["n01491361", "n03180011"]


def _image(value):
  return np.full((8, 10, 3), value, np.uint8)


def test_add_writes_png_then_manifest_row_and_load_returns_it(tmp_path):
  writer = aug.AugmentationSetWriter(tmp_path, "simple")
  key = aug.item_key(WNIDS[0], 3)
  assert key == "n01491361_000003"
  assert not writer.has(key)
  writer.add(_image(7), {"wnid": WNIDS[0], "key": key, "prompt": "A photo of tiger shark.", "seed": 0})
  assert writer.has(key)
  png = tmp_path / "images" / WNIDS[0] / f"{key}.png"
  assert np.array_equal(np.asarray(Image.open(png)), _image(7))  # PNG is lossless
  rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
  assert rows == [
    {
      "wnid": WNIDS[0],
      "key": key,
      "path": f"images/{WNIDS[0]}/{key}.png",
      "method": "simple",
      "prompt": "A photo of tiger shark.",
      "seed": 0,
    }
  ]
  loaded = aug.load_augmentation_set(tmp_path)
  assert loaded[0]["path"] == str(png.resolve())
  # A new writer (a resumed job) sees what is done.
  assert aug.AugmentationSetWriter(tmp_path, "simple").has(key)


def test_writer_refuses_unsafe_keys_bad_wnids_duplicates_and_mixed_methods(tmp_path):
  writer = aug.AugmentationSetWriter(tmp_path, "simple")
  for bad in ["../evil", "a/b", ".hidden", "", "http://x.com/a.png", "a b"]:
    with pytest.raises(ValueError, match="bad augmentation item key"):
      writer.add(_image(0), {"wnid": WNIDS[0], "key": bad})
  with pytest.raises(ValueError, match="n0149136"):
    writer.add(_image(0), {"wnid": "n0149136", "key": "k"})
  with pytest.raises(ValueError, match="lacks the field 'key'"):
    writer.add(_image(0), {"wnid": WNIDS[0]})
  with pytest.raises(ValueError, match=r"uint8 array \[H, W, 3\]"):
    writer.add(np.zeros((4, 4, 3), np.float32), {"wnid": WNIDS[0], "key": "k"})
  writer.add(_image(0), {"wnid": WNIDS[0], "key": "k"})
  with pytest.raises(ValueError, match="'k' is already"):
    writer.add(_image(0), {"wnid": WNIDS[0], "key": "k"})
  with pytest.raises(ValueError, match="method 'simple'.*not 'retrieval'"):
    aug.AugmentationSetWriter(tmp_path, "retrieval")
  assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "images" / "n0149136").exists()


def test_load_names_the_missing_file(tmp_path):
  writer = aug.AugmentationSetWriter(tmp_path, "simple")
  for i in range(3):
    writer.add(_image(i), {"wnid": WNIDS[1], "key": aug.item_key(WNIDS[1], i)})
  (tmp_path / "images" / WNIDS[1] / "n03180011_000001.png").unlink()
  with pytest.raises(FileNotFoundError, match="images/n03180011/n03180011_000001.png"):
    aug.load_augmentation_set(tmp_path)


def test_sharded_writers_are_read_together(tmp_path):
  for shard in range(2):
    writer = aug.AugmentationSetWriter(tmp_path, "clip", shard=shard)
    writer.add(_image(shard), {"wnid": WNIDS[0], "key": aug.item_key(WNIDS[0], shard)})
  assert sorted(r["key"] for r in aug.load_augmentation_set(tmp_path)) == ["n01491361_000000", "n01491361_000001"]
  assert aug.AugmentationSetWriter(tmp_path, "clip", shard=0).has("n01491361_000001")


def _records(per_class):
  return [
    {"wnid": w, "key": aug.item_key(w, i), "path": f"/x/{w}/{i:06d}.png"} for w, n in per_class.items() for i in range(n)
  ]


def test_resample_counts_determinism_and_independence():
  # 390 generated images per class; the subset has ceil(0.1 n_c) per class (74..130 on ImageNet).
  records = _records({WNIDS[0]: 390, WNIDS[1]: 390})
  counts = {WNIDS[0]: math.ceil(0.1 * 732), WNIDS[1]: math.ceil(0.1 * 1300)}
  assert counts == {WNIDS[0]: 74, WNIDS[1]: 130}
  sets = aug.resample(records, counts, n_sets=5, seed=0)
  assert len(sets) == 5
  for drawn in sets:
    for wnid, count in counts.items():
      paths = [r["path"] for r in drawn if r["wnid"] == wnid]
      assert len(paths) == count and len(set(paths)) == count  # without replacement within a set
  assert len({tuple(r["path"] for r in s) for s in sets}) == 5  # the 5 sets differ
  # Deterministic, and independent of the order in which the manifest listed the images.
  shuffled = [records[i] for i in np.random.default_rng(1).permutation(len(records))]
  assert aug.resample(shuffled, counts, n_sets=5, seed=0) == sets
  assert aug.resample(records, counts, n_sets=5, seed=1) != sets
  # A class's draw does not depend on which other classes are drawn.
  alone = aug.resample(records, {WNIDS[1]: 130}, n_sets=5, seed=0)
  assert [[r for r in s if r["wnid"] == WNIDS[1]] for s in sets] == alone


def test_resample_errors_name_the_class():
  records = _records({WNIDS[0]: 100})
  with pytest.raises(ValueError, match="class n01491361: the augmentation set has 100 images but .* 130"):
    aug.resample(records, {WNIDS[0]: 130}, seed=0)
  with pytest.raises(ValueError, match="class n03180011: the augmentation set has 0 images"):
    aug.resample(records, {WNIDS[1]: 1}, seed=0)
