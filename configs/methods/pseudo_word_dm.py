"""Pseudo-word + DM (method 9): textual inversion plus U-Net fine-tuning.

The best DM method of the paper (61.2 +- 0.2 top-1).

  python finetune_dm.py --config=configs/methods/pseudo_word_dm.py:tiny --workdir=runs/pseudo_word_dm

tiny: a tiny random SD on the synthetic ImageNet, seconds on a CPU; paper: SD v1.4 on the 10% subset.
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import base_config


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  configs_dir = Path(__file__).resolve().parents[1]
  config = base_config(configs_dir, "finetune", arg)
  config.data = base_config(configs_dir, "data", arg)
  config.method = ml_collections.ConfigDict({
      "name": "pseudo_word_dm", "conditioning": "pseudo_word", "clusters_per_class": 1, "train_unet": True})
  return config
