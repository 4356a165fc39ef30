"""Fine-tuning examples: the subset / validation records of the study's splits, read as SD training
images, and the per-epoch batch order.

Every random choice is a pure function of (seed, epoch, record index): the batch order of an epoch, the
textual-inversion template of an example and (in the trainer) its noise, so a resumed run repeats
exactly the batches it would have seen.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from PIL import Image

from jax_aug.data.transforms import vae_image
from jax_aug.io import ImageDecodeError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Example:
  path: str
  label: int
  index: int  # position in its split's record list: the per-item key of its noise and template
  cluster: int  # its k-means cluster within its class (FT cluster conditioning), else 0


def template_seed(seed: int, epoch: int) -> int:
  """Textual-inversion templates are redrawn each epoch (epochs < 1000; the paper stops at 40)."""
  return seed * 1000 + epoch


def epoch_order(num_examples: int, global_batch_size: int, *, seed: int, epoch: int, shuffle: bool) -> list[np.ndarray]:
  """Global batches of example positions for one epoch. Training shuffles by (seed, epoch) and drops
  the last incomplete batch (static shapes); evaluation keeps order and pads the last batch with -1."""
  order = np.random.default_rng([seed, epoch]).permutation(num_examples) if shuffle else np.arange(num_examples)
  if shuffle:
    usable = num_examples - num_examples % global_batch_size
    if usable == 0:
      raise ValueError(f"{num_examples} training examples cannot fill one batch of {global_batch_size}")
    return [order[i : i + global_batch_size] for i in range(0, usable, global_batch_size)]
  padded = np.full(-(-num_examples // global_batch_size) * global_batch_size, -1)
  padded[:num_examples] = order
  return list(padded.reshape(-1, global_batch_size))


class BatchReader:
  """Host-local batch dicts for the positions this process feeds (its block of each global batch): image,
  index, weight and the fields of the method's conditioning kind (`conditioning.batch_fields`).

  An image that cannot be read (a disk error, a file changed since the data check) is logged and skipped:
  its row gets weight 0, like padding, and `skipped` counts it (the trainer logs the count)."""

  def __init__(
    self,
    examples: Sequence[Example],
    *,
    read_image: Callable[[str], Image.Image],
    resolution: int,
    conditioning: Any,
    seed: int,
    num_threads: int = 8,
  ):
    self.examples = list(examples)
    self.read_image = read_image
    self.resolution = resolution
    self.conditioning = conditioning  # a jax_aug.finetune.trainables.ConditioningKind
    self.seed = seed
    self._pool = concurrent.futures.ThreadPoolExecutor(num_threads)
    # A separate thread for the prefetch, so it never waits on a pool its own image reads need.
    self._prefetch = concurrent.futures.ThreadPoolExecutor(1)
    self.skipped = 0

  def _load(self, position: int) -> np.ndarray | None:
    path = self.examples[position].path
    try:
      return vae_image(self.read_image(path), self.resolution)
    except (ImageDecodeError, OSError) as e:
      log.warning("skipping unreadable image %s (weight 0, counted as skipped): %s", path, e)
      return None

  def host_positions(self, global_positions: np.ndarray) -> np.ndarray:
    n = len(global_positions) // jax.process_count()
    return global_positions[jax.process_index() * n : (jax.process_index() + 1) * n]

  def batch(self, global_positions: np.ndarray, epoch: int) -> dict[str, np.ndarray]:
    positions = self.host_positions(global_positions)
    real = positions >= 0
    safe = np.where(real, positions, positions[real][0] if real.any() else 0)
    images = list(self._pool.map(self._load, safe.tolist()))
    unreadable = np.array([image is None for image in images])
    self.skipped += int((unreadable & real).sum())
    blank = np.zeros((3, self.resolution, self.resolution), np.float32)
    batch = {
      "image": np.stack([blank if image is None else image for image in images]),
      "index": np.asarray([self.examples[p].index for p in safe], np.int32),
      "weight": (real & ~unreadable).astype(np.float32),
    }
    batch.update(self.conditioning.batch_fields([self.examples[p] for p in safe], epoch=epoch, seed=self.seed))
    return batch

  def batches(self, order: Sequence[np.ndarray], epoch: int, start: int = 0) -> Iterator[dict]:
    """Batches `start..` of an epoch, the next one read while the current one trains."""
    pending = None
    for step in range(start, len(order)):
      current = pending.result() if pending is not None else self.batch(order[step], epoch)
      pending = self._prefetch.submit(self.batch, order[step + 1], epoch) if step + 1 < len(order) else None
      yield current
