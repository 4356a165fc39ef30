"""Installs trained mini-world weights as the package's own (jax_aug/assets/mini_world, configs/mini.py's
default): the files the export folder's manifest lists, checked against their sha256 before and after the
copy, at most 30 MB (docs/mini_world.md, "The study on it").

  python scripts/ship_mini_world.py --export=mini_world_runs/train/export
"""

import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from jax_aug.mini_world import world

# pylint: enable=wrong-import-position

_EXPORT = flags.DEFINE_string("export", None, "export folder of scripts/train_mini_world.py", required=True)
_DESTINATION = flags.DEFINE_string("destination", str(world.ASSETS), "where the package reads its weights")


def main(argv):
  del argv
  folder = world.install_weights(_EXPORT.value, _DESTINATION.value)
  print(f"installed {sum(1 for p in folder.rglob('*') if p.is_file())} files into {folder}")


if __name__ == "__main__":
  app.run(main)
