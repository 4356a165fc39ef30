"""Data check throughput (images/s): every image decoded once by `jax_aug.data.check`, against a plain
loop of torchvision's ImageFolder loader (pil_loader) over the same files in one process.

  .venv/bin/python benchmarks/data_check_throughput.py --workers=2
  .venv/bin/python benchmarks/data_check_throughput.py --root=/data/imagenet/train --workers=16

Without --root it draws a deterministic synthetic ImageNet (6 classes x --images_per_class JPEGs of
--image_size px, seed 0) into a temp dir. The check runs into a fresh output folder each round (no resume),
so every image is decoded; the reference loop and the check alternate for --rounds. Prints images/s of
both (the check's own figure is its summary.json's images_per_second, which includes starting the worker
processes: a second or two, so use enough images) and their ratio.
"""

import tempfile
import time
from pathlib import Path

import machine_load
from absl import flags

from jax_aug.data import check, sources
from jax_aug.data.synthetic import make_synthetic_imagenet

FLAGS = flags.FLAGS
flags.DEFINE_string("root", "", "a split folder of <wnid>/ class folders; empty: synthetic data")
flags.DEFINE_integer("workers", 2, "decoding processes of the check (0: in this process)")
flags.DEFINE_integer("images_per_class", 500, "synthetic images per class (6 classes)")
flags.DEFINE_integer("image_size", 384, "synthetic image side (ImageNet's mean is about 400 x 350)")
flags.DEFINE_integer("rounds", 2, "alternating rounds; the best of each is reported")


def main(argv):
  del argv
  # Imported here, not at the top: the check's spawned workers import this module, and only need absl.
  from torchvision.datasets.folder import pil_loader  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmp:
    if FLAGS.root:
      folder = Path(FLAGS.root)
    else:
      root = make_synthetic_imagenet(
        Path(tmp) / "imagenet", train_per_class=FLAGS.images_per_class, val_per_class=1, image_size=FLAGS.image_size, seed=0
      )
      folder = root / "train"
    records, _ = sources.folder_listing(folder)
    ours, reference = [], []
    for round_index in range(FLAGS.rounds):
      start = time.perf_counter()
      for record in records:
        pil_loader(record["path"])
      reference.append(len(records) / (time.perf_counter() - start))
      summary = check.check_path(folder, Path(tmp) / f"check_{round_index}", num_workers=FLAGS.workers)
      ours.append(summary["images_per_second"])
  print(
    f"{len(records)} images, check with {FLAGS.workers} workers: {max(ours):.1f} images/s;"
    f" torchvision pil_loader loop (1 process): {max(reference):.1f} images/s;"
    f" ratio {max(ours) / max(reference):.2f}"
  )


if __name__ == "__main__":
  machine_load.run(main)
