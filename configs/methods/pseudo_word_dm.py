"""Pseudo-word + DM (method 9): textual inversion plus U-Net fine-tuning.

The best DM method of the paper (61.2 +- 0.2 top-1).

  python finetune_dm.py --config=configs/methods/pseudo_word_dm.py:tiny --workdir=runs/pseudo_word_dm
  python sample.py --config=configs/methods/pseudo_word_dm.py:tiny --config.finetune.workdir=runs/pseudo_word_dm \
      --workdir=runs/pseudo_word_dm_samples

tiny: a tiny random SD on the synthetic ImageNet, seconds on a CPU; paper: SD v1.4 on the 10% subset.
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(
    __file__, arg, kind="finetuned", display_name="Pseudoword+DM", conditioning="pseudo_word", train_unet=True
  )
