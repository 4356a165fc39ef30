"""10% ImageNet baseline (paper Table 1: 57.2 ± 0.2 top-1): ResNet-50 trained on the 10% subset alone,
early stopping and checkpoint choice on the validation split, scored on the official validation split.

  python train_classifier.py --config=configs/methods/baseline_10pct.py:tiny --workdir=runs/baseline_10pct

The data block draws the splits into `<workdir>/splits/` first (tiny: a synthetic ImageNet of 6 classes,
drawn on the fly; paper: ILSVRC2012 from configs/base/data.py's root). Tiny takes about a minute on a
2-core CPU and reaches well above the 16.7% chance level; paper scale is ~57% top-1.
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(__file__, arg, kind="baseline", display_name="10% ImageNet", train_split="subset")
