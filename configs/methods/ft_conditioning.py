"""FT conditioning (method 5): one learned conditioning tensor per class, DM frozen.

Each class's conditioning [77, 768] starts as the CLIP encoding of its no-ws simple prompt.

  python finetune_dm.py --config=configs/methods/ft_conditioning.py:tiny --workdir=runs/ft_conditioning
  python sample.py --config=configs/methods/ft_conditioning.py:tiny --config.finetune.workdir=runs/ft_conditioning \
      --workdir=runs/ft_conditioning_samples

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
  config.method = "ft_conditioning"
  config.finetune = base_config(configs_dir, "finetune", arg)
  config.finetune.trainables = ml_collections.ConfigDict({
      "conditioning": "tensor", "clusters_per_class": 1, "train_unet": False})
  return config
