"""The embedded default: the whole study with tiny numbers, on a laptop CPU, from nothing.

  python run_study.py --config=configs/tiny.py --workdir=runs/tiny

Same code path as configs/paper.py: a synthetic ImageNet of 6 real classes drawn on the fly, tiny
random-init Stable Diffusion / CLIP / Inception built on the fly, a tiny ResNet, every method and both
baselines, few images, short training, 2 resampled sets per method. Its numbers test the machinery, not
the science (the report says so). Time on a 2-core CPU: see docs/study.md.
"""

from pathlib import Path

from jax_aug.study.config_files import study_config

# The areas' own tiny configs make 2 (sampling) or 4 (retrieval) images per class, sized for their tests.
# The study draws resampled sets with the 10% subset's per-class counts, 10 per class on the tiny
# synthetic ImageNet (ceil(0.1 * 100)), so every method must bring at least that many (the paper: 390 and
# 130 for subsets of 74..130 per class).
IMAGES_PER_CLASS = 12


def get_config(arg: str | None = None):
  del arg
  config = study_config(Path(__file__).resolve().parent, "tiny")
  for method in config.method_configs.values():
    if "images_per_class" in method:
      method.images_per_class = IMAGES_PER_CLASS
  return config
