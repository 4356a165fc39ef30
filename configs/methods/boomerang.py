"""Boomerang (method 10): noise each subset image part-way, denoise it with SD, no prompt (img2img).

  python sample.py --config=configs/methods/boomerang.py:tiny --workdir=runs/boomerang

boomerang_strength = 0.2: the fraction of the 50-step schedule re-run (10 steps from t~200 of 1000), our
reading of Boomerang's data-augmentation setting and of the paper's Fig. 4 ("only slightly distorts the
original images"); docs/diffusion.md explains the choice. The prompt is empty, so guidance is inert.
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import base_config

BOOMERANG_STRENGTH = 0.2


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  configs_dir = Path(__file__).resolve().parents[1]
  config = base_config(configs_dir, "diffusion", arg)
  config.data = base_config(configs_dir, "data", arg)
  config.method = "boomerang"
  # tiny has 4 steps: 0.5 re-runs 2 of them (0.2 would re-run none).
  config.boomerang_strength = BOOMERANG_STRENGTH if arg == "paper" else 0.5
  return config
