"""grain input pipelines (no TensorFlow): ImageNet training and evaluation transforms, per-host batches.

Training (`make_train_loader`) yields ONE epoch of this host's rows of each global batch. The epoch's order
is a permutation seeded by (seed, epoch) and each example's crop and flip come from a generator seeded by
(seed, epoch, record index), so a batch is a pure function of (records, seed, epoch, step): the same for
any number of grain workers and any number of hosts, which exact resumption and the 1-vs-N-device
equivalence tests of the classifier rely on. The last partial global batch is dropped.

Evaluation (`make_eval_loader`) pads the last global batch and returns `mask` (True for real examples),
so every example counts exactly once.

An image that cannot be read (the data check keeps undecodable files out of the splits, so this means a
disk error or a file changed since) never stops a run: it is logged as a warning, training substitutes
the next readable record (index + 1, + 2, ...; its own crop and flip, so batches stay deterministic) and
evaluation masks the row out; either way the batch's `skipped` flags count it, and the trainers put the
count in their metrics.

Global batch rows are split into contiguous blocks, host h taking rows [h*b, (h+1)*b): the layout
`jax_aug.sharding.global_batch` (jax.make_array_from_process_local_data over a 1-D mesh) expects.
Labels are positions in `wnids` (the study's class list after exclusion), never read from records.

Images leave the workers as uint8 pixels (4x fewer bytes through grain's shared memory than float32) and
are normalised by `normalize` where they are consumed: inside the jitted classifier steps on the device
(jax_aug.classifier.steps), in PyTorch for the twin. Profiled on one worker over 500x375 JPEGs (q90),
normalising in the worker took ~25% of the time per example, as much as the resize.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence

import grain
import numpy as np
from absl import flags
from PIL import Image, ImageEnhance

from jax_aug.data.cache import CachedReader, MemoryCachedReader
from jax_aug.data.sources import ImageReader
from jax_aug.data.transforms import resize_center_crop
from jax_aug.io import ImageDecodeError

log = logging.getLogger(__name__)

# torchvision's ImageNet statistics, on the 0..255 scale.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
# First word of every pipeline seed, so the order stream and the per-example streams never coincide.
_ORDER_STREAM, _AUGMENT_STREAM = 0, 1


def label_map(wnids: Sequence[str]) -> dict[str, int]:
  if len(set(wnids)) != len(wnids):
    raise ValueError("the class list (wnids) has duplicates")
  return {wnid: label for label, wnid in enumerate(wnids)}


def mix(*record_lists: Sequence[dict]) -> list[dict]:
  """One training source from several record lists (e.g. the subset + one resampled augmentation set).

  Records must have absolute paths or tfds:// paths (as `subsets.read_manifest` and
  `augmentation_set.load_augmentation_set` return them), so lists from different folders can mix.
  """
  mixed = []
  for records in record_lists:
    mixed.extend(records)
  return mixed


def random_resized_crop_box(
  rng: np.random.Generator,
  width: int,
  height: int,
  scale: tuple[float, float] = (0.08, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
  """(top, left, crop height, crop width), the algorithm of torchvision's RandomResizedCrop.get_params:
  10 tries of a random area fraction in `scale` and log-uniform aspect in `ratio`, else a centre crop
  with the aspect clamped into `ratio`."""
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: Image.Image, box: tuple[int, int, int, int], image_size: int, flip: bool) -> np.ndarray:
  """Crops (top, left, height, width), resizes to image_size (bilinear, as torchvision on PIL images)
  and optionally mirrors horizontally."""
  top, left, h, w = box
  image = image.crop((left, top, left + w, top + h)).resize((image_size, image_size), Image.BILINEAR)
  if flip:
    image = image.transpose(Image.FLIP_LEFT_RIGHT)
  return np.asarray(image, np.uint8)


@dataclasses.dataclass(frozen=True)
class Photometric:
  """Colour augmentation after the crop, as torchvision's RandomApply([ColorJitter(*color_jitter)],
  p=color_jitter_p) then RandomGrayscale(grayscale_p). `color_jitter` = (brightness, contrast, saturation,
  hue): factors uniform in [max(0, 1 - x), 1 + x] (hue: a shift uniform in [-x, x] of the hue circle), applied
  in a random order. All zero (the default, torchvision's ImageNet recipe and the paper's): no colour change
  and no random draws, so the crops and flips of a run without it are unchanged."""

  color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
  color_jitter_p: float = 1.0
  grayscale_p: float = 0.0

  def __post_init__(self):
    if len(self.color_jitter) != 4 or min(self.color_jitter) < 0 or self.color_jitter[3] > 0.5:
      raise ValueError(
        f"color_jitter={self.color_jitter}: expected 4 non-negative strengths (brightness, contrast, saturation,"
        " hue), hue at most 0.5"
      )
    for name in ("color_jitter_p", "grayscale_p"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name}={getattr(self, name)}: expected a probability in [0, 1]")

  @property
  def active(self) -> bool:
    return (any(self.color_jitter) and self.color_jitter_p > 0) or self.grayscale_p > 0


def adjust_hue(image: Image.Image, shift: float) -> Image.Image:
  """Rotates the hue of an RGB image by `shift` turns (in [-0.5, 0.5]) in PIL's 8-bit HSV, wrapping around."""
  h, s, v = image.convert("HSV").split()
  hue = (np.asarray(h, np.uint8) + np.uint8(int(shift * 255) % 256)).astype(np.uint8)  # wraps modulo 256
  return Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert("RGB")


def grayscale(image: Image.Image) -> Image.Image:
  """ITU-R 601-2 luma (PIL's "L"), repeated over 3 channels."""
  return image.convert("L").convert("RGB")


def jitter_colours(image: Image.Image, order: Sequence[int], factors: Sequence[float], hue_shift: float) -> Image.Image:
  """Applies brightness (0), contrast (1), saturation (2) with their `factors` and the hue shift (3) in `order`."""
  for op in order:
    if op == 3:
      image = adjust_hue(image, hue_shift)
    else:
      enhancer = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)[op]
      image = enhancer(image).enhance(factors[op])
  return image


def photometric_transform(image: Image.Image, rng: np.random.Generator, photometric: Photometric) -> Image.Image:
  """`photometric`'s random colour change of `image`, its randomness drawn from `rng`."""
  if any(photometric.color_jitter) and rng.random() < photometric.color_jitter_p:
    b, c, s, h = photometric.color_jitter
    order = rng.permutation(4)
    factors = [rng.uniform(max(0.0, 1 - x), 1 + x) for x in (b, c, s)]
    image = jitter_colours(image, order, factors, rng.uniform(-h, h))
  if photometric.grayscale_p and rng.random() < photometric.grayscale_p:
    image = grayscale(image)
  return image


def train_transform(
  image: Image.Image,
  rng: np.random.Generator,
  image_size: int,
  scale: tuple[float, float],
  ratio: tuple[float, float],
  photometric: Photometric = Photometric(),
) -> np.ndarray:
  """Random resized crop + horizontal flip with probability 0.5, then `photometric`'s colour change, all
  randomness drawn from `rng`."""
  box = random_resized_crop_box(rng, image.width, image.height, scale, ratio)
  pixels = resized_crop(image, box, image_size, flip=rng.random() < 0.5)
  if not photometric.active:
    return pixels
  return np.asarray(photometric_transform(Image.fromarray(pixels), rng, photometric), np.uint8)


def eval_transform(image: Image.Image, image_size: int, crop_fraction: float = 0.875) -> np.ndarray:
  """torchvision's Resize(int(image_size / crop_fraction)) (shorter side) + CenterCrop(image_size)."""
  return resize_center_crop(image, int(image_size / crop_fraction), image_size, Image.Resampling.BILINEAR)


def normalize(images):
  """float32 (pixels - mean) / std with torchvision's ImageNet statistics, of a numpy or jax array of uint8
  pixels [..., 3] (the same expression traced inside the jitted steps)."""
  return ((images.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


class _LoadExample:
  """Record index -> example. Top-level and holding only picklable state, for grain worker processes."""

  def __init__(
    self,
    records: Sequence[dict],
    labels: Mapping[str, int],
    reader: ImageReader,
    *,
    train: bool,
    image_size: int,
    seed: int = 0,
    epoch: int = 0,
    crop_scale=(0.08, 1.0),
    crop_ratio=(3 / 4, 4 / 3),
    crop_fraction: float = 0.875,
    photometric: Photometric = Photometric(),
  ):
    self.paths = [r["path"] for r in records]
    self.labels = np.array([labels[r["wnid"]] for r in records], np.int32)
    self.reader, self.train, self.image_size = reader, train, image_size
    self.seed, self.epoch = seed, epoch
    self.crop_scale, self.crop_ratio, self.crop_fraction = tuple(crop_scale), tuple(crop_ratio), crop_fraction
    self.photometric = photometric

  def _read(self, index: int):
    try:
      return self.reader(self.paths[index])
    except (ImageDecodeError, OSError) as e:
      log.warning("skipping unreadable image %s (counted as skipped in the metrics): %s", self.paths[index], e)
      return None

  def _padding(self, skipped: bool) -> dict:
    return {
      "image": np.zeros((self.image_size, self.image_size, 3), np.uint8),
      "label": np.int32(0),
      "index": np.int32(-1),
      "mask": False,
      "skipped": skipped,
    }

  def __call__(self, index: int) -> dict:
    if index < 0:  # padding of the last evaluation batch
      return self._padding(skipped=False)
    image, skipped = self._read(index), False
    if image is None and not self.train:
      return self._padding(skipped=True)
    first = index
    while image is None:  # training: the next readable record takes the unreadable one's place
      skipped, index = True, (index + 1) % len(self.paths)
      if index == first:
        raise RuntimeError(f"none of the {len(self.paths)} training records could be read")
      image = self._read(index)
    if self.train:
      rng = np.random.default_rng([_AUGMENT_STREAM, self.seed, self.epoch, index])
      pixels = train_transform(image, rng, self.image_size, self.crop_scale, self.crop_ratio, self.photometric)
    else:
      pixels = eval_transform(image, self.image_size, self.crop_fraction)
    return {"image": pixels, "label": self.labels[index], "index": np.int32(index), "mask": True, "skipped": skipped}


def _collate(examples: Sequence[dict]) -> dict:
  return {
    "image": np.stack([e["image"] for e in examples]),
    "label": np.array([e["label"] for e in examples], np.int32),
    "index": np.array([e["index"] for e in examples], np.int32),
    "mask": np.array([e["mask"] for e in examples], bool),
    "skipped": np.array([e["skipped"] for e in examples], bool),
  }


def _check_records(records: Sequence[dict], labels: Mapping[str, int]) -> None:
  for record in records:
    if record["wnid"] not in labels:
      raise ValueError(
        f"record {record['path']} has class {record['wnid']!r}, which is not in the"
        f" study's class list of {len(labels)} classes (excluded or unknown)"
      )
    path = record["path"]
    if not path.startswith("tfds://") and not path.startswith("/"):
      raise ValueError(f"record path {path!r} is relative: resolve it (subsets.read_manifest does)")


def _hosts(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top  (only to ask which host this is)

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
  return process_index, process_count


def _host_rows(global_order: np.ndarray, global_batch_size: int, process_index: int, process_count: int) -> np.ndarray:
  """This host's block of every global batch, in batch order."""
  if global_batch_size % process_count:
    raise ValueError(f"global batch size {global_batch_size} is not divisible by {process_count} hosts")
  per_host = global_batch_size // process_count
  batches = global_order.reshape(-1, global_batch_size)
  return batches[:, process_index * per_host : (process_index + 1) * per_host].reshape(-1)


def _loader(indices: np.ndarray, load: _LoadExample, per_host: int, num_workers: int) -> grain.IterDataset:
  dataset = (
    grain.MapDataset.source(indices.tolist())
    .map(load)
    .batch(per_host, drop_remainder=False, batch_fn=_collate)
    .to_iter_dataset()
  )
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain reads absl flags; outside absl.app nobody parsed them
      flags.FLAGS.mark_as_parsed()
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return dataset


def _reader(tfds_data_dir: str | None, tfds_name: str, cache_dir: str | None, memory_cache_bytes: int):
  reader = CachedReader(cache_dir) if cache_dir else ImageReader(tfds_data_dir, tfds_name)
  return MemoryCachedReader(reader, memory_cache_bytes) if memory_cache_bytes else reader


def steps_per_epoch(num_records: int, global_batch_size: int) -> int:
  return num_records // global_batch_size


def make_train_loader(
  records: Sequence[dict],
  *,
  wnids: Sequence[str],
  epoch: int,
  seed: int,
  global_batch_size: int,
  image_size: int,
  num_workers: int = 0,
  crop_scale: tuple[float, float] = (0.08, 1.0),
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
  photometric: Photometric = Photometric(),
  tfds_data_dir: str | None = None,
  tfds_name: str = "imagenet2012",
  process_index: int | None = None,
  process_count: int | None = None,
  cache_dir: str | None = None,
  memory_cache_bytes: int = 0,
) -> Iterable[dict]:
  """One epoch of this host's training batches: {"image": uint8 [b,H,W,3] pixels (`normalize` them), "label": int32
  [b], "index": int32 [b] (position in `records`), "mask": bool [b] (all True), "skipped": bool [b] (an
  unreadable record replaced by the next readable one)}, b = global / hosts. With `cache_dir` the pixels
  come from a decode-once cache (jax_aug.data.cache) holding these records, not from the JPEGs; with
  `memory_cache_bytes` the decoded images stay in this process's memory up to that budget (cache.MemoryCachedReader);
  `photometric`: colour augmentation after the crop and flip (off by default)."""
  labels = label_map(wnids)
  _check_records(records, labels)
  steps = steps_per_epoch(len(records), global_batch_size)
  if steps == 0:
    raise ValueError(f"{len(records)} training records make no full global batch of {global_batch_size}")
  process_index, process_count = _hosts(process_index, process_count)
  order = np.random.default_rng([_ORDER_STREAM, seed, epoch]).permutation(len(records))
  rows = _host_rows(order[: steps * global_batch_size], global_batch_size, process_index, process_count)
  load = _LoadExample(
    records,
    labels,
    _reader(tfds_data_dir, tfds_name, cache_dir, memory_cache_bytes),
    train=True,
    image_size=image_size,
    seed=seed,
    epoch=epoch,
    crop_scale=crop_scale,
    crop_ratio=crop_ratio,
    photometric=photometric,
  )
  return _loader(rows, load, global_batch_size // process_count, num_workers)


def make_eval_loader(
  records: Sequence[dict],
  *,
  wnids: Sequence[str],
  batch_size: int,
  image_size: int,
  crop_fraction: float = 0.875,
  num_workers: int = 0,
  tfds_data_dir: str | None = None,
  tfds_name: str = "imagenet2012",
  process_index: int | None = None,
  process_count: int | None = None,
  cache_dir: str | None = None,
  memory_cache_bytes: int = 0,
) -> Iterable[dict]:
  """All of `records` once, in order, as this host's rows of global batches of `batch_size` (all hosts
  together); the last global batch is padded with zero images whose `mask` is False. `cache_dir`,
  `memory_cache_bytes`: as make_train_loader's."""
  labels = label_map(wnids)
  _check_records(records, labels)
  if not records:
    raise ValueError("no evaluation records")
  process_index, process_count = _hosts(process_index, process_count)
  steps = math.ceil(len(records) / batch_size)
  order = np.full(steps * batch_size, -1, np.int64)
  order[: len(records)] = np.arange(len(records))
  rows = _host_rows(order, batch_size, process_index, process_count)
  load = _LoadExample(
    records,
    labels,
    _reader(tfds_data_dir, tfds_name, cache_dir, memory_cache_bytes),
    train=False,
    image_size=image_size,
    crop_fraction=crop_fraction,
  )
  return _loader(rows, load, batch_size // process_count, num_workers)
