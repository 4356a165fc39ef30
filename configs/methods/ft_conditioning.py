"""FT conditioning (method 5): one learned conditioning tensor per class, DM frozen.

Each class's conditioning [77, 768] starts as the CLIP encoding of its no-ws simple prompt.

  python finetune_dm.py --config=configs/methods/ft_conditioning.py:tiny --workdir=runs/ft_conditioning
  python sample.py --config=configs/methods/ft_conditioning.py:tiny --config.finetune.workdir=runs/ft_conditioning \
      --workdir=runs/ft_conditioning_samples

tiny: a tiny random SD on the synthetic ImageNet, seconds on a CPU; paper: SD v1.4 on the 10% subset.
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(__file__, arg, kind="finetuned", display_name="FT conditioning", conditioning="tensor")
