"""Simple prompt (method 1): "A photo of n." with n = all lemmas of the class joined by ", ".

  python sample.py --config=configs/methods/simple_prompt.py:tiny --workdir=runs/simple_prompt

tiny: a tiny random SD, 2 images per class at 32 px, seconds on a CPU; paper: SD v1.4, 390 per class at
512 px, 50 PNDM steps, guidance 7.5 (docs/diffusion.md: throughput).
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import base_config


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  configs_dir = Path(__file__).resolve().parents[1]
  config = base_config(configs_dir, "diffusion", arg)
  config.data = base_config(configs_dir, "data", arg)
  config.method = "simple_prompt"
  return config
