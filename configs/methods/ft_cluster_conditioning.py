"""FT cluster conditioning (method 6): one learned conditioning per k-means cluster of a class.

k = 5 (paper: best; 10 and 15 were worse) clusters of Inception-v3 pool features per class; each
conditioning starts as the class's no-ws simple prompt encoding; sampling draws clusters in proportion
to their size.

  python finetune_dm.py --config=configs/methods/ft_cluster_conditioning.py:tiny --workdir=runs/ft_cluster_conditioning
  python sample.py --config=configs/methods/ft_cluster_conditioning.py:tiny \
      --config.finetune.workdir=runs/ft_cluster_conditioning \
      --workdir=runs/ft_cluster_conditioning_samples

tiny: a tiny random SD on the synthetic ImageNet, seconds on a CPU; paper: SD v1.4 on the 10% subset.
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(
    __file__, arg, kind="finetuned", display_name="FT cluster conditioning", conditioning="tensor", clusters_per_class=5
  )
