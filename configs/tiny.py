"""The embedded default: the whole study with tiny numbers, on a laptop CPU, from nothing.

  python run_study.py --config=configs/tiny.py --workdir=runs/tiny

Same code path as configs/paper.py: a synthetic ImageNet of a few classes drawn on the fly, tiny
random-init Stable Diffusion / CLIP / Inception built on the fly, every method and both baselines, few
images, short classifier training, 2 resampled sets per method. Its numbers test the machinery, not the
science (the report says so). Time on a 2-core CPU: see docs/study.md.
"""

from pathlib import Path

from jax_aug.study.config_files import study_config


def get_config(arg: str | None = None):
  del arg
  return study_config(Path(__file__).resolve().parent, "tiny")
