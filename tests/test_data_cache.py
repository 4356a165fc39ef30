"""The decode-once cache (jax_aug/data/cache.py) against the JPEG path of the same loaders."""

import numpy as np
import pytest
from PIL import Image

from jax_aug.data import cache, pipeline
from jax_aug.data.synthetic import DEFAULT_WNIDS

WNIDS = list(DEFAULT_WNIDS[:2])
SIZES = [(60, 45), (45, 60), (50, 50), (64, 40)]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp("jpegs")
  rows = []
  for i in range(16):
    rng = np.random.default_rng(i)
    width, height = SIZES[i % len(SIZES)]
    path = root / WNIDS[i % 2] / f"{i:03d}.JPEG"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)).save(path, quality=90)
    rows.append({"wnid": WNIDS[i % 2], "path": str(path)})
  return rows


def _train(records, **kwargs):
  return list(
    pipeline.make_train_loader(
      records, wnids=WNIDS, epoch=1, seed=3, global_batch_size=8, image_size=24, process_index=0, process_count=1, **kwargs
    )
  )


def _eval(records, **kwargs):
  return list(
    pipeline.make_eval_loader(records, wnids=WNIDS, batch_size=8, image_size=24, process_index=0, process_count=1, **kwargs)
  )


def _assert_same(batches, reference):
  assert len(batches) == len(reference)
  for ours, theirs in zip(batches, reference):
    for key in ("image", "label", "index", "mask", "skipped"):
      np.testing.assert_array_equal(ours[key], theirs[key])


def test_cache_gives_the_jpeg_paths_batches_when_its_side_is_not_smaller(records, tmp_path):
  cached = str(cache.write_cache(records, tmp_path / "cache", max_side=64))
  _assert_same(_train(records, cache_dir=cached), _train(records))
  _assert_same(_eval(records, cache_dir=cached), _eval(records))
  # Worker processes get the reader by pickling (it opens the file lazily in each).
  _assert_same(_train(records, cache_dir=cached, num_workers=2), _train(records))


def test_a_smaller_stored_side_downscales_and_changes_the_pixels(records, tmp_path):
  """Negative control: the equality above is not vacuous; a 32 px cache stores 32x24 for 64x40 etc."""
  reader = cache.CachedReader(cache.write_cache(records, tmp_path / "cache", max_side=32))
  sizes = [reader(r["path"]).size for r in records[:4]]
  assert sizes == [(32, 24), (24, 32), (32, 32), (32, 20)]
  first = _eval(records, cache_dir=reader.cache_dir)[0]["image"]
  assert np.abs(first.astype(int) - _eval(records)[0]["image"].astype(int)).mean() > 5


def test_cache_errors_name_the_problem(records, tmp_path):
  with pytest.raises(FileNotFoundError, match="no finished decode-once cache"):
    cache.CachedReader(tmp_path / "missing")
  with pytest.raises(ValueError, match="max_side must be a positive number of pixels, got 0"):
    cache.write_cache(records, tmp_path / "c0", max_side=0)
  reader = cache.CachedReader(cache.write_cache(records[:2], tmp_path / "c", max_side=64))
  with pytest.raises(KeyError, match="is not in the decode-once cache"):
    reader(records[5]["path"])
