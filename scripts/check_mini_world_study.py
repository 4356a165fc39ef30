"""The mini world's recognition bars on a finished mini study (docs/mini_world.md, "Quality bars"):

  python scripts/check_mini_world_study.py --config=configs/mini.py --workdir=runs/mini --out=runs/mini_check \
      [--config.mini_world.weights=...]   (the study's own config and overrides)

Trains a classifier on the target's training data (with colour augmentation, recognition.RECOGNIZER_PHOTOMETRIC)
and prints and writes <out>/recognition.json: the fraction of each sampled method's images recognised as their
class (bar: the no-ws simple prompt's >= 0.50; textual inversion and FT conditioning above it) and of the web
control (real corpus photos of each class), with the recognizer's own test top-1. Then the safety bar
(jax_aug/mini_world/safety_bar.py) into <out>/safety: the checker's flags on samples of the corpus's NSFW
captions (bar >= 0.80), the engine's replacements checked against them, and the study's own false alarms.
"""

import json
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from jax_aug.mini_world import recognition, safety_bar

# pylint: enable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file("config", None, "the study's config (configs/mini.py)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "the finished study's workdir", required=True)
_OUT = flags.DEFINE_string("out", None, "the recognizer's run and recognition.json", required=True)
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  summary = recognition.recognition(_CONFIG.value, _WORKDIR.value, _OUT.value)
  print(json.dumps({k: v for k, v in summary.items() if k != "recognised_per_class"}, indent=1))
  print(json.dumps(safety_bar.safety_bar(_CONFIG.value, _WORKDIR.value, Path(_OUT.value) / "safety"), indent=1))


if __name__ == "__main__":
  app.run(main)
