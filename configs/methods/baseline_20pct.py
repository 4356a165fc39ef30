"""20% ImageNet upper bound (paper Table 1: 70.2 ± 0.3 top-1): the 10% subset plus as many more real
images per class, same recipe and splits as configs/methods/baseline_10pct.py.

  python train_classifier.py --config=configs/methods/baseline_20pct.py:tiny --workdir=runs/baseline_20pct
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(__file__, arg, kind="baseline", display_name="20% ImageNet", train_split="subset_20")
