"""CLIP prompts (method 3): CLIP's 80 ImageNet templates, drawn with replacement per image.

  python sample.py --config=configs/methods/clip_prompts.py:tiny --workdir=runs/clip_prompts

tiny: a tiny random SD, 2 images per class at 32 px, seconds on a CPU; paper: SD v1.4, 390 per class at
512 px, 50 PNDM steps, guidance 7.5 (docs/diffusion.md: throughput).
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(__file__, arg, kind="prompt", display_name="CLIP prompts", prompt_strategy="clip_templates")
