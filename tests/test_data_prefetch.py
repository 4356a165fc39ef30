"""sharding.prefetch_to_device: order, placement, host-only entries, errors and early stops."""

import threading
import time

import numpy as np
import pytest

from jax_aug import sharding


def _batches(n, delays=()):
  for i in range(n):
    if i < len(delays):
      time.sleep(delays[i])  # uneven loader latencies must not reorder anything
    yield {
      "image": np.full((4, 2, 2, 3), i, np.uint8),
      "label": np.arange(4, dtype=np.int32) + 10 * i,
      "skipped": np.array([i % 2 == 0] * 4),
    }


def _prefetch_threads():
  return [t for t in threading.enumerate() if t.name == "prefetch_to_device"]


@pytest.mark.parametrize("size", [1, 3])
def test_prefetch_keeps_the_order_and_the_host_entries(size):
  mesh = sharding.make_mesh()
  out = list(
    sharding.prefetch_to_device(_batches(7, delays=[0.05, 0, 0.03, 0, 0, 0.02]), mesh, ("image", "label"), size=size)
  )
  assert len(out) == 7
  for i, batch in enumerate(out):
    assert batch["image"].sharding == sharding.data_sharding(mesh)  # on the device, batch-sharded
    np.testing.assert_array_equal(np.asarray(batch["image"]), np.full((4, 2, 2, 3), i, np.uint8))
    np.testing.assert_array_equal(np.asarray(batch["label"]), np.arange(4) + 10 * i)
    assert isinstance(batch["skipped"], np.ndarray) and batch["skipped"].all() == (i % 2 == 0)
  assert not _prefetch_threads()


def test_prefetch_raises_the_loaders_error_at_its_batch():
  def failing():
    yield from _batches(2)
    raise OSError("disk gone")

  seen = []
  with pytest.raises(OSError, match="disk gone"):
    for batch in sharding.prefetch_to_device(failing(), sharding.make_mesh(), ("image",)):
      seen.append(int(np.asarray(batch["image"])[0, 0, 0, 0]))
  assert seen == [0, 1]
  assert not _prefetch_threads()


def test_stopping_early_stops_the_thread_and_reads_at_most_size_ahead():
  read = []

  def counted():
    for batch in _batches(100):
      read.append(1)
      yield batch

  for step, _ in enumerate(sharding.prefetch_to_device(counted(), sharding.make_mesh(), ("image",), size=2)):
    if step == 3:
      break
  assert not _prefetch_threads()
  assert len(read) <= 4 + 2 + 1  # consumed + queued + the one the thread held when told to stop


def test_prefetch_size_must_be_positive():
  with pytest.raises(ValueError, match="prefetch size must be at least 1, got 0"):
    next(sharding.prefetch_to_device(_batches(1), sharding.make_mesh(), ("image",), size=0))
