"""Pseudo-word + DM (method 9): textual inversion plus U-Net fine-tuning.

The best DM method of the paper (61.2 +- 0.2 top-1).

  python finetune_dm.py --config=configs/methods/pseudo_word_dm.py:tiny --workdir=runs/pseudo_word_dm
  python sample.py --config=configs/methods/pseudo_word_dm.py:tiny --config.finetune.workdir=runs/pseudo_word_dm \
      --workdir=runs/pseudo_word_dm_samples

tiny: a tiny random SD on the synthetic ImageNet, seconds on a CPU; paper: SD v1.4 on the 10% subset.
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import base_config


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  configs_dir = Path(__file__).resolve().parents[1]
  # The sampling block at the top (sample.py), the fine-tuning block under `finetune` (finetune_dm.py);
  # both use the same `model` and `data`.
  config = base_config(configs_dir, "diffusion", arg)
  config.data = base_config(configs_dir, "data", arg)
  config.method = "pseudo_word_dm"
  config.finetune = base_config(configs_dir, "finetune", arg)
  config.finetune.trainables = ml_collections.ConfigDict({
      "conditioning": "pseudo_word", "clusters_per_class": 1, "train_unet": True})
  return config
