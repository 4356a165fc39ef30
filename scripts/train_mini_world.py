"""Trains the mini world's models from a seed, in stages that resume (docs/mini_world.md).

  python scripts/make_mini_world.py --out=mini_world_runs/data
  python scripts/train_mini_world.py --config=configs/mini_world_train.py --data=mini_world_runs/data \
      --out=mini_world_runs/train --config.stages=clip

Stopped and started again with the same flags, every stage continues from its last checkpoint with the
same batches and keys.
"""

import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jax_aug.mini_world.train import train  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/mini_world_train.py", lock_config=True)
_DATA = flags.DEFINE_string("data", None, "folder written by scripts/make_mini_world.py", required=True)
_OUT = flags.DEFINE_string("out", None, "training output folder", required=True)


def main(argv):
  del argv
  train(_CONFIG.value, _DATA.value, _OUT.value)


if __name__ == "__main__":
  app.run(main)
