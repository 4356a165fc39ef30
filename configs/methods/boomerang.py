"""Boomerang (method 10): noise each subset image part-way, denoise it with SD, no prompt (img2img).

  python sample.py --config=configs/methods/boomerang.py:tiny --workdir=runs/boomerang

boomerang_strength = 0.2: the fraction of the 50-step schedule re-run (10 steps from t~200 of 1000), our
reading of Boomerang's data-augmentation setting and of the paper's Fig. 4 ("only slightly distorts the
original images"); docs/diffusion.md explains the choice. The prompt is empty, so guidance is inert.

The paper does not give the strength, so the study chooses it on validation (docs/study.md): one candidate
augmentation set per `boomerang_strength_grid` value, one classifier each on subset + that set, the best
validation top-1 wins, as for the fine-tuning checkpoints. `boomerang_strength` is what sample.py alone
uses; an empty grid makes the study use it too.
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")

BOOMERANG_STRENGTH = 0.2
PAPER_STRENGTH_GRID = (0.1, 0.2, 0.3, 0.5)


def _strength(config: ml_collections.ConfigDict, scale: str) -> None:
  # tiny has 4 steps: 0.5 re-runs 2 of them (0.2 would re-run none).
  config.boomerang_strength = BOOMERANG_STRENGTH if scale == "paper" else 0.5
  # tiny: 2 of its 4 steps or 3 of them.
  config.boomerang_strength_grid = PAPER_STRENGTH_GRID if scale == "paper" else (0.5, 0.75)


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(__file__, arg, kind="boomerang", display_name="Boomerang", customize=_strength)
