"""Simple prompt (method 1): "A photo of n." with n = all lemmas of the class joined by ", ".

  python sample.py --config=configs/methods/simple_prompt.py:tiny --workdir=runs/simple_prompt

tiny: a tiny random SD, 2 images per class at 32 px, seconds on a CPU; paper: SD v1.4, 390 per class at
512 px, 50 PNDM steps, guidance 7.5 (docs/diffusion.md: throughput).
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(__file__, arg, kind="prompt", display_name="Simple prompt", prompt_strategy="simple")
