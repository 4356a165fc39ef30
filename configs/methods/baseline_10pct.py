"""10% ImageNet baseline (paper Table 1: 57.2 ± 0.2 top-1): ResNet-50 trained on the 10% subset alone,
early stopping and checkpoint choice on the validation split, scored on the official validation split.

  python train_classifier.py --config=configs/methods/baseline_10pct.py:tiny --workdir=runs/baseline_10pct

The data block draws the splits into `<workdir>/splits/` first (tiny: a synthetic ImageNet of 6 classes,
drawn on the fly; paper: ILSVRC2012 from configs/base/data.py's root). Tiny takes about a minute on a
2-core CPU and reaches well above the 16.7% chance level; paper scale is ~57% top-1.
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import base_config

CONFIGS = Path(__file__).resolve().parents[1]


def baseline(arg: str, train_split: str) -> ml_collections.ConfigDict:
  config = base_config(CONFIGS, "classifier", arg)
  config.data = base_config(CONFIGS, "data", arg)
  config.train_manifests = (train_split,)
  config.validation_manifest = "validation"
  config.test_manifest = "test"
  return config


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return baseline(arg, "subset")
