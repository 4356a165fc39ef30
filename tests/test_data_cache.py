"""The decode-once cache (jax_aug/data/cache.py) against the JPEG path of the same loaders."""

import os

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


def _counting_decoder(monkeypatch):
  """Counts the file decodes of the loaders' production reader (sources.ImageReader -> load_image_file)."""
  from jax_aug.data import sources

  decoded = []
  real = sources.load_image_file

  def counted(path, **options):
    decoded.append(path)
    return real(path, **options)

  monkeypatch.setattr(sources, "load_image_file", counted)
  return decoded


def test_memory_cache_gives_the_same_batches_and_decodes_each_image_once(records, monkeypatch):
  reference_train, reference_eval = _train(records), _eval(records)
  decoded = _counting_decoder(monkeypatch)
  budget = 2**20
  _assert_same(_train(records, memory_cache_bytes=budget), reference_train)
  _assert_same(_eval(records, memory_cache_bytes=budget), reference_eval)
  assert sorted(decoded) == sorted(r["path"] for r in records)  # the epoch decoded each once, eval none
  # A later epoch and a later run (new loaders, same process) decode nothing.
  later = list(
    pipeline.make_train_loader(
      records, wnids=WNIDS, epoch=2, seed=3, global_batch_size=8, image_size=24, memory_cache_bytes=budget
    )
  )
  assert len(decoded) == len(records) and len(later) == 2


def test_memory_cache_decodes_a_rewritten_file_again_and_keeps_to_its_budget(tmp_path, monkeypatch):
  paths = []
  for i in range(3):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(np.full((10, 10, 3), i, np.uint8)).save(paths[-1])
  decoded = _counting_decoder(monkeypatch)
  from jax_aug.data.sources import ImageReader

  budget = 2 * 10 * 10 * 3 + 1  # two of the 10x10 RGB images, not three
  reader = cache.MemoryCachedReader(ImageReader(), budget)
  for path in paths:
    reader(path)
  assert reader.store.used_bytes == 2 * 300 <= budget
  reader(paths[2])
  reader(paths[1])
  assert len(decoded) == 3  # the two most recent were kept
  reader(paths[0])  # least recently used, evicted by the third
  assert len(decoded) == 4
  Image.fromarray(np.full((10, 10, 3), 200, np.uint8)).save(paths[0])  # rewritten in place
  os.utime(paths[0], ns=(0, 1))  # a modification time the first write cannot have had
  assert np.asarray(reader(paths[0]))[0, 0, 0] == 200 and len(decoded) == 5


def test_memory_cache_refuses_worker_processes_and_a_bad_budget():
  with pytest.raises(ValueError, match=r"config.input.memory_cache_mb=64 with num_workers=4: .*in-process loading"):
    cache.check_memory_cache(64, 4)
  with pytest.raises(ValueError, match=r"memory_cache_mb=-1: expected 0 \(off\) or a positive budget in MiB"):
    cache.check_memory_cache(-1, 0)
  with pytest.raises(ValueError, match="memory cache budget must be a positive number of bytes, got 0"):
    cache.MemoryCachedReader(lambda path: None, 0)


def test_memory_cache_shared_by_threads_counts_each_image_once(tmp_path):
  """The loaders' prefetch threads share a store: concurrent reads of the same images leave it holding each
  image once, its byte count their sum (a double-counted insert would make it evict too early)."""
  from concurrent.futures import ThreadPoolExecutor

  from jax_aug.data.sources import ImageReader

  paths = []
  for i in range(20):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(np.full((8 + i, 10, 3), i, np.uint8)).save(paths[-1])
  reader = cache.MemoryCachedReader(ImageReader(), 10**7 + 3)  # a budget no other test uses: a fresh store
  orders = [list(np.random.default_rng(t).permutation(paths)) for t in range(8)]
  with ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda order: [reader(p) for p in order], orders))
  assert reader.store.used_bytes == sum((8 + i) * 10 * 3 for i in range(20))
  assert [np.asarray(reader(p))[0, 0, 0] for p in paths] == list(range(20))
