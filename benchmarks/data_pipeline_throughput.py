"""Training input pipeline throughput: our grain loader vs torchvision's DataLoader, same process, same
images, same transform (random-resized-crop + flip + normalize), same number of worker processes.

  .venv/bin/python benchmarks/data_pipeline_throughput.py --workers=2 --image_size=224
  .venv/bin/python benchmarks/data_pipeline_throughput.py --root=/data/imagenet --workers=16 --images=20000

Without --root it draws a synthetic ImageNet (6 classes, 256 px JPEGs) into a temp dir. Each loader
reads every image once per round; the two alternate for --rounds so a busy machine slows both alike.
Prints, for both, the seconds to the first batch (worker start-up: grain spawns its workers, each
importing grain and jax, ~3 s; torchvision forks) and images/s after it, and the steady-state ratio.
"""

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from absl import app, flags
from torchvision import datasets
from torchvision import transforms as T

from jax_aug.data import pipeline, sources
from jax_aug.data.synthetic import DEFAULT_WNIDS, make_synthetic_imagenet

FLAGS = flags.FLAGS
flags.DEFINE_string("root", "", "ILSVRC folder layout root (uses root/train); empty: synthetic data")
flags.DEFINE_integer("workers", 2, "worker processes for both loaders")
flags.DEFINE_integer("batch_size", 64, "global batch size")
flags.DEFINE_integer("image_size", 224, "training crop size")
flags.DEFINE_integer("images", 768, "images per round (a prefix of the sorted file list)")
flags.DEFINE_integer("rounds", 2, "alternating rounds; the first round of each is a warm-up")


def _rates(batches):
  """(seconds to the first batch, images/s after it): worker start-up apart from steady state."""
  start = time.perf_counter()
  first = count = 0
  for images in batches:
    if not first:
      first = time.perf_counter()
    else:
      count += images.shape[0]
  return first - start, count / (time.perf_counter() - first)


def _ours(records, wnids):
  loader = pipeline.make_train_loader(records, wnids=wnids, epoch=0, seed=0,
                                      global_batch_size=FLAGS.batch_size, image_size=FLAGS.image_size,
                                      num_workers=FLAGS.workers, process_index=0, process_count=1)
  return _rates(batch["image"] for batch in loader)


def _torchvision(folder, indices):
  transform = T.Compose([T.RandomResizedCrop(FLAGS.image_size), T.RandomHorizontalFlip(), T.ToTensor(),
                         T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
  dataset = torch.utils.data.Subset(datasets.ImageFolder(folder, transform=transform), indices)
  loader = torch.utils.data.DataLoader(dataset, batch_size=FLAGS.batch_size, shuffle=True,
                                       num_workers=FLAGS.workers, drop_last=True)
  return _rates(images for images, _ in loader)


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    if FLAGS.root:
      train = Path(FLAGS.root) / "train"
    else:
      per_class = -(-FLAGS.images // len(DEFAULT_WNIDS))
      train = make_synthetic_imagenet(tmp, train_per_class=per_class, val_per_class=1, image_size=256,
                                      seed=0) / "train"
    records = sources.folder_records(train)[:FLAGS.images]
    wnids = sorted({r["wnid"] for r in records})
    # ImageFolder sorts classes and files the same way, so these are the same images.
    indices = list(range(len(records)))
    ours, theirs = [], []
    for _ in range(FLAGS.rounds):
      ours.append(_ours(records, wnids))
      theirs.append(_torchvision(str(train), indices))
    ours_start, ours_rate = np.median(ours[1:] or ours, axis=0)
    theirs_start, theirs_rate = np.median(theirs[1:] or theirs, axis=0)
    print(f"{len(records)} images, {FLAGS.image_size} px, batch {FLAGS.batch_size}, {FLAGS.workers} workers")
    print(f"ours (grain):           {ours_rate:8.1f} images/s after the first batch ({ours_start:.1f} s to it)")
    print(f"torchvision DataLoader: {theirs_rate:8.1f} images/s after the first batch ({theirs_start:.1f} s to it)")
    print(f"ratio ours / torchvision (steady state): {ours_rate / theirs_rate:.2f}")


if __name__ == "__main__":
  app.run(main)
