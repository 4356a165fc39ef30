"""Sariyildiz et al. prompts (method 4): their template categories, equal counts, random Places365 background.

  python sample.py --config=configs/methods/sariyildiz_prompts.py:tiny --workdir=runs/sariyildiz_prompts

tiny: a tiny random SD, 2 images per class at 32 px, seconds on a CPU; paper: SD v1.4, 390 per class at
512 px, 50 PNDM steps, guidance 7.5 (docs/diffusion.md: throughput).
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(
    __file__, arg, kind="prompt", display_name="Sariyildiz et al. prompts", prompt_strategy="sariyildiz"
  )
