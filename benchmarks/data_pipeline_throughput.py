"""Input pipeline throughput on ImageNet-sized JPEGs: our grain loader vs torchvision's DataLoader, same
process, same images, same transforms, same number of worker processes; then one classifier epoch end to
end (loader + train step, overlapped) for both.

  .venv/bin/python benchmarks/data_pipeline_throughput.py              # ~2-3 min on an idle 2-core machine
  .venv/bin/python benchmarks/data_pipeline_throughput.py --root=/data/imagenet --workers=16 --images=20000

Without --root it draws, deterministically, `--images` JPEGs of 500x375 at quality 90 (ILSVRC's size
class: smooth content + sensor-like noise, ~75 KB each) into a temp dir, so anyone can rerun it. Run it
alone: it prints the load average first, and a busy machine makes every figure noise.

Pipeline: each loader reads every image once per round (train: random-resized-crop + flip; eval: resize +
centre crop); the two alternate for --rounds so a drifting machine slows both alike; the first round is a
warm-up. Ours yields uint8 pixels and normalises on the device inside the jitted step (what the trainer
does); torchvision's yields normalised float32 (ToTensor + Normalize in the workers, as its recipe does).
The decode-once cache (jax_aug/data/cache.py, stored side 500: the pixels unchanged) is read by the same
loader as a third contestant. Printed: images/s once every worker has delivered a batch, per worker core,
and the seconds to the first batch (grain spawns its workers, each importing grain, jax and the main
module; torchvision forks).

End to end: one epoch of a small ResNet (--e2e_stage_sizes, --e2e_filters) at --image_size on the CPU:
ours = grain loader -> prefetch_to_device -> jitted train step (and without prefetch, to show what the
background transfer buys); theirs = DataLoader -> the same network in PyTorch (jax_aug/twin).
"""

import os
import tempfile
import time
from pathlib import Path

import machine_load
import numpy as np
from absl import flags
from PIL import Image

from jax_aug.data import cache, pipeline, sources
from jax_aug.data.synthetic import DEFAULT_WNIDS

# torch, torchvision, flax and the twin are imported where used, not here: grain spawns its workers and
# each re-imports this (main) module; importing them at the top made every worker start seconds slower
# and, on a loaded 2-core machine, its steady state 10x slower (measured: 19 vs 470 images/s).

FLAGS = flags.FLAGS
flags.DEFINE_string("root", "", "ILSVRC folder layout root (uses root/train); empty: draw ImageNet-sized JPEGs")
flags.DEFINE_integer("workers", 2, "worker processes for both loaders")
flags.DEFINE_integer("batch_size", 64, "global batch size")
flags.DEFINE_integer("image_size", 224, "training crop size")
flags.DEFINE_integer("images", 768, "images per round (a prefix of the sorted file list)")
flags.DEFINE_integer("rounds", 2, "alternating rounds; the first round of each is a warm-up")
flags.DEFINE_list("e2e_stage_sizes", ["1", "1"], "ResNet stages of the end-to-end epoch (empty: skip it)")
flags.DEFINE_integer("e2e_filters", 16, "stem filters of the end-to-end ResNet")

JPEG_SIZE, JPEG_QUALITY = (500, 375), 90


def draw_imagenet_sized_folder(root: Path, num_images: int) -> Path:
  """`root/train/<wnid>/<i>.JPEG`, 500x375 q90, a pure function of the image number."""
  for i in range(num_images):
    rng = np.random.default_rng([18, i])
    wnid = DEFAULT_WNIDS[i % len(DEFAULT_WNIDS)]
    coarse = Image.fromarray(rng.integers(0, 256, (9, 12, 3), np.uint8)).resize(JPEG_SIZE, Image.BICUBIC)
    pixels = np.asarray(coarse, np.float32) + rng.normal(0, 12, (JPEG_SIZE[1], JPEG_SIZE[0], 3))
    path = root / "train" / wnid / f"{i:06d}.JPEG"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=JPEG_QUALITY)
  return root / "train"


def _rates(batches, block=lambda x: x):
  """(seconds to the first batch, images/s once every worker has delivered its first batch).

  Both loaders hand out batches round robin over their workers, so until each worker has started the
  rate measures start-up, not the pipeline; start-up is the first figure.
  """
  start = time.perf_counter()
  first = steady = count = 0
  for seen, images in enumerate(batches, start=1):
    block(images)
    if seen == 1:
      first = time.perf_counter() - start
    if seen == max(FLAGS.workers, 1):
      steady = time.perf_counter()
    elif steady:
      count += images.shape[0]
  if not count:
    raise ValueError(
      f"--images={FLAGS.images} makes too few batches of {FLAGS.batch_size} for"
      f" {FLAGS.workers} workers and a steady-state rate"
    )
  return first, count / (time.perf_counter() - steady)


def _ours(records, wnids, train: bool, cache_dir=None):
  common = dict(
    wnids=wnids,
    image_size=FLAGS.image_size,
    num_workers=FLAGS.workers,
    process_index=0,
    process_count=1,
    cache_dir=cache_dir,
  )
  if train:
    loader = pipeline.make_train_loader(records, epoch=0, seed=0, global_batch_size=FLAGS.batch_size, **common)
  else:
    loader = pipeline.make_eval_loader(records, batch_size=FLAGS.batch_size, **common)
  return loader


def _torchvision(folder, indices, train: bool):
  import torch  # pylint: disable=g-import-not-at-top  (see the imports)
  from torchvision import datasets  # pylint: disable=g-import-not-at-top
  from torchvision import transforms as T

  normalize = [T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
  if train:
    transform = T.Compose([T.RandomResizedCrop(FLAGS.image_size), T.RandomHorizontalFlip()] + normalize)
  else:
    transform = T.Compose([T.Resize(int(FLAGS.image_size / 0.875)), T.CenterCrop(FLAGS.image_size)] + normalize)
  dataset = torch.utils.data.Subset(datasets.ImageFolder(folder, transform=transform), indices)
  return torch.utils.data.DataLoader(
    dataset, batch_size=FLAGS.batch_size, shuffle=train, num_workers=FLAGS.workers, drop_last=train
  )


def _print(name, start_and_rate):
  start, rate = start_and_rate
  print(
    f"  {name:34s} {rate:8.1f} images/s = {rate / FLAGS.workers:7.1f} per worker core   ({start:.2f} s to the first batch)"
  )


def _pipelines(train_dir, records, wnids, cache_dir):
  indices = list(range(len(records)))  # ImageFolder sorts classes and files as folder_records: same images
  for train in (True, False):
    ours, cached, theirs = [], [], []
    for _ in range(FLAGS.rounds):
      ours.append(_rates(b["image"] for b in _ours(records, wnids, train)))
      cached.append(_rates(b["image"] for b in _ours(records, wnids, train, cache_dir)))
      theirs.append(_rates(images for images, _ in _torchvision(str(train_dir), indices, train)))
    ours, cached, theirs = (np.median(r[1:] or r, axis=0) for r in (ours, cached, theirs))
    print(f"{'train' if train else 'eval'} transform:")
    _print("ours (grain, uint8 out)", ours)
    _print("ours from the decode-once cache", cached)
    _print("torchvision DataLoader (float32 out)", theirs)
    print(
      f"  ratio ours / torchvision (steady state): {ours[1] / theirs[1]:.2f};"
      f" cache / torchvision: {cached[1] / theirs[1]:.2f}"
    )


def _end_to_end(train_dir, records, wnids):
  # pylint: disable=g-import-not-at-top  (see the imports)
  import jax
  import ml_collections

  from jax_aug import sharding
  from jax_aug.classifier import model as model_lib
  from jax_aug.classifier import steps
  from jax_aug.twin import classifier as twin

  # pylint: enable=g-import-not-at-top
  config = ml_collections.ConfigDict(
    {
      "stage_sizes": [int(s) for s in FLAGS.e2e_stage_sizes],
      "num_filters": FLAGS.e2e_filters,
      "dtype": "float32",
      "batch_norm": "global",
    }
  )
  optimizer = ml_collections.ConfigDict(
    {"learning_rate": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "weight_decay_applies_to": "all"}
  )
  mesh = sharding.make_mesh()
  model, tx = model_lib.build_model(config, len(wnids)), steps.make_optimizer(optimizer)
  # On the host: the jitted step donates its state, so each run starts from its own device copy.
  initial = jax.device_get(steps.create_train_state(model, tx, jax.random.key(0), FLAGS.image_size))
  variables = initial.variables()
  train_step = steps.jit_train_step(model, tx, mesh)

  def ours(prefetch: bool):
    state = sharding.replicate(initial, mesh)
    loader = _ours(records, wnids, train=True)
    batches = (
      sharding.prefetch_to_device(loader, mesh, ("image", "label"))
      if prefetch
      else (sharding.global_batch({"image": b["image"], "label": b["label"]}, mesh) for b in loader)
    )
    for batch in batches:
      state, metrics = train_step(state, {"image": batch["image"], "label": batch["label"]})
      yield batch["image"]
    jax.block_until_ready(metrics)

  def theirs():
    model_t = twin.build_model(config, len(wnids), variables)
    optimizer_t = twin.make_optimizer(model_t, optimizer, variables)
    for images, labels in _torchvision(str(train_dir), list(range(len(records))), train=True):
      twin.train_step(model_t, optimizer_t, images, labels)
      yield images

  block = lambda images: jax.block_until_ready(images) if isinstance(images, jax.Array) else images
  print(
    f"classifier epoch end to end (ResNet stages {config.stage_sizes}, {config.num_filters} filters,"
    f" {jax.devices()[0].platform}; the first batch includes compilation):"
  )
  _print("ours: grain + prefetch_to_device", _rates(ours(prefetch=True), block))
  _print("ours: grain, no prefetch", _rates(ours(prefetch=False), block))
  _print("torchvision DataLoader + PyTorch", _rates(theirs()))


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    if FLAGS.root:
      train_dir = Path(FLAGS.root) / "train"
    else:
      train_dir = draw_imagenet_sized_folder(Path(tmp), FLAGS.images)
    records = sources.folder_records(train_dir)[: FLAGS.images]
    wnids = sorted({r["wnid"] for r in records})
    mean_kb = np.mean([os.path.getsize(r["path"]) for r in records]) / 1024
    print(
      f"{len(records)} JPEGs ({mean_kb:.0f} KB mean) in {train_dir}, crop {FLAGS.image_size} px,"
      f" batch {FLAGS.batch_size}, {FLAGS.workers} workers"
    )
    start = time.perf_counter()
    # Stored side 500: ImageNet-sized images are kept as decoded (the pixels the crops see are unchanged).
    cache_dir = str(cache.write_cache(records, Path(tmp) / "cache", max_side=500))
    print(f"decode-once cache written in {time.perf_counter() - start:.1f} s (one process)")
    _pipelines(train_dir, records, wnids, cache_dir)
    if FLAGS.e2e_stage_sizes:
      _end_to_end(train_dir, records, wnids)


if __name__ == "__main__":
  machine_load.run(main)
