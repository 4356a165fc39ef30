"""Draws the mini world's corpus and target dataset (docs/mini_world.md), deterministic from the seed.

  python scripts/make_mini_world.py --out=mini_world_runs/data            # corpus/ and target/
  python scripts/make_mini_world.py --out=... --corpus_size=2000          # a prefix of the corpus (tests)
  python scripts/make_mini_world.py --out=... --examples=docs/mini_world_examples.jpg   # + a picture

Resumes where a killed run stopped (per corpus shard, per target class) with identical bytes.
"""

import sys
import time
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jax_aug.mini_world import concepts  # pylint: disable=wrong-import-position
from jax_aug.mini_world.corpus import write_corpus  # pylint: disable=wrong-import-position
from jax_aug.mini_world.target import write_target  # pylint: disable=wrong-import-position

_OUT = flags.DEFINE_string("out", None, "output folder (gets corpus/ and target/)", required=True)
_SEED = flags.DEFINE_integer("seed", concepts.WORLD_SEED, "world seed")
_CORPUS_SIZE = flags.DEFINE_integer("corpus_size", concepts.CORPUS_SIZE, "corpus items (a prefix of the plan)")
_WORKERS = flags.DEFINE_integer("workers", 1, "processes drawing corpus shards (same bytes for any number)")
_EXAMPLES = flags.DEFINE_string("examples", None, "also write a grid: first corpus items, then target images per class")


def examples_grid(corpus: Path, target: Path, path: Path, corpus_items: int = 72, per_class: int = 3) -> None:
  """Corpus items 0..corpus_items-1 (12 per row), then `per_class` target train images of each class (4 classes
  per row), 2x enlarged."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from jax_aug.io import load_image_file  # pylint: disable=g-import-not-at-top
  from jax_aug.mini_world.corpus import image_path  # pylint: disable=g-import-not-at-top

  tiles = [load_image_file(corpus / "images" / image_path(i)) for i in range(corpus_items)]
  tiles += [load_image_file(target / "train" / w / f"{w}_{i}.JPEG") for w in concepts.WNIDS for i in range(per_class)]
  side, cols = concepts.IMAGE_SIZE + 2, 12
  grid = Image.new("RGB", (cols * side, -(-len(tiles) // cols) * side + side), (255, 255, 255))
  for k, tile in enumerate(tiles):
    row = k // cols + (1 if k >= corpus_items else 0)  # one blank row between corpus and target
    grid.paste(tile, ((k % cols) * side, row * side))
  path.parent.mkdir(parents=True, exist_ok=True)
  grid.resize((grid.size[0] * 2, grid.size[1] * 2), Image.Resampling.NEAREST).save(path, quality=90)


def main(argv):
  del argv
  out = Path(_OUT.value)
  start = time.perf_counter()
  write_corpus(out / "corpus", seed=_SEED.value, size=_CORPUS_SIZE.value, workers=_WORKERS.value)
  corpus_s = time.perf_counter() - start
  write_target(out / "target", seed=_SEED.value)
  print(f"corpus: {corpus_s:.1f} s, target: {time.perf_counter() - start - corpus_s:.1f} s")
  if _EXAMPLES.value:
    examples_grid(out / "corpus", out / "target", Path(_EXAMPLES.value))


if __name__ == "__main__":
  app.run(main)
