"""Imagic (conditioning & DM, method 7): conditioning tensor per class and the U-Net trained jointly.

Paper: the validation loss still fell after 40 epochs but image quality dropped after 8, so the
checkpoints of each of the first 8 epochs are kept (besides best train / best validation).

  python finetune_dm.py --config=configs/methods/imagic.py:tiny --workdir=runs/imagic
  python sample.py --config=configs/methods/imagic.py:tiny --config.finetune.workdir=runs/imagic \
      --workdir=runs/imagic_samples

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
  config.method = "imagic"
  config.finetune = base_config(configs_dir, "finetune", arg)
  config.finetune.method = ml_collections.ConfigDict({
      "conditioning": "tensor", "clusters_per_class": 1, "train_unet": True})
  config.finetune.policy.keep_epochs = tuple(range(1, 9))
  return config
