"""Draws the mini world's corpus and target dataset (docs/mini_world.md), deterministic from the seed.

  python scripts/make_mini_world.py --out=mini_world_runs/data            # corpus/ and target/
  python scripts/make_mini_world.py --out=... --corpus_size=2000          # a prefix of the corpus (tests)

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


def main(argv):
  del argv
  out = Path(_OUT.value)
  start = time.perf_counter()
  write_corpus(out / "corpus", seed=_SEED.value, size=_CORPUS_SIZE.value)
  corpus_s = time.perf_counter() - start
  write_target(out / "target", seed=_SEED.value)
  print(f"corpus: {corpus_s:.1f} s, target: {time.perf_counter() - start - corpus_s:.1f} s")


if __name__ == "__main__":
  app.run(main)
