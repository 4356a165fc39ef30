"""Imagic (conditioning & DM, method 7): conditioning tensor per class and the U-Net trained jointly.

Paper (Sec. 3.2): "we found that the validation loss was still decreasing after 40 epochs, however, as the
quality of the reconstructed images significantly deteriorated after 8 epochs, we instead stored checkpoints
for the first 8 epochs". Read literally: training runs exactly 8 epochs (no early stop before them) and the
kept set is exactly epochs 1..8, no best-train / best-validation checkpoint; the selection among the 8 is
the downstream validation accuracy, as for every method. The alternative reading (train up to 40 epochs,
keep best train / best validation besides epochs 1..8) is `--config.finetune.policy.max_epochs=40
--config.finetune.policy.keep_best=True --config.finetune.policy.patience=2`.

  python finetune_dm.py --config=configs/methods/imagic.py:tiny --workdir=runs/imagic
  python sample.py --config=configs/methods/imagic.py:tiny --config.finetune.workdir=runs/imagic \
      --workdir=runs/imagic_samples

tiny: a tiny random SD on the synthetic ImageNet, seconds on a CPU; paper: SD v1.4 on the 10% subset.
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")

IMAGIC_EPOCHS = 8


def _first_epochs(config: ml_collections.ConfigDict, scale: str) -> None:
  del scale
  config.finetune.policy.keep_epochs = tuple(range(1, IMAGIC_EPOCHS + 1))
  config.finetune.policy.keep_best = False
  # tiny keeps its short runs (3 epochs); paper: exactly 8, never stopped earlier by the validation loss.
  config.finetune.policy.max_epochs = min(config.finetune.policy.max_epochs, IMAGIC_EPOCHS)
  config.finetune.policy.patience = config.finetune.policy.max_epochs
  # sample.py alone samples the last kept epoch (there is no best_val); the study chooses by validation.
  config.finetune.checkpoint = f"epoch_{config.finetune.policy.max_epochs}"


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(
    __file__,
    arg,
    kind="finetuned",
    display_name="Imagic (conditioning & DM)",
    customize=_first_epochs,
    conditioning="tensor",
    train_unet=True,
  )
