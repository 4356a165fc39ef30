"""FT cluster conditioning (method 6): one learned conditioning per k-means cluster of a class.

k = 5 (paper: best; 10 and 15 were worse) clusters of Inception-v3 pool features per class; each
conditioning starts as the class's no-ws simple prompt encoding; sampling draws clusters in proportion
to their size.

  python finetune_dm.py --config=configs/methods/ft_cluster_conditioning.py:tiny --workdir=runs/ft_cluster_conditioning
  python sample.py --config=configs/methods/ft_cluster_conditioning.py:tiny --config.finetune.workdir=runs/ft_cluster_conditioning \
      --workdir=runs/ft_cluster_conditioning_samples

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
  config.method = "ft_cluster_conditioning"
  config.finetune = base_config(configs_dir, "finetune", arg)
  config.finetune.trainables = ml_collections.ConfigDict({
      "conditioning": "tensor", "clusters_per_class": 5, "train_unet": False})
  return config
