"""The paper's full study (Burg et al., 2023; protocol in ../shared/PROTOCOL.md).

  python run_study.py --config=configs/paper.py --workdir=runs/paper \
      --config.data.<...>=<ImageNet location> --config.method_configs.<m>.<...>=<SD v1.4 / ViT-L/14 weights>

Real SD v1.4 and CLIP ViT-L/14 weights (local paths or hub ids), ILSVRC2012, 390 images per class per DM
method (130 retrieved), 5 resampled sets per method, ResNet-50 with batch 256, lr 0.1, lr / 10 after 10
epochs without validation improvement, stop after 20 or 270 epochs; fine-tuning at most 40 epochs with
the paper's checkpoint sets (Imagic: exactly its first 8 epochs), a 5-point learning-rate grid per
fine-tuned method (lowest validation loss wins), checkpoints and Boomerang's strength (0.1, 0.2, 0.3, 0.5)
chosen by downstream validation accuracy; CLIP prompts filled with w(n); retrieval k from 1.4 x 130 up to
6 x 1.4 x 130, aesthetic score >= 5. The paper's ablations (FT cluster conditioning k = 1, 10, 15; simple
prompt with the first lemma only) run as extra Table 1 rows with `--config.ablations=all`.
Expected Table 1 (top-1 %): 10% ImageNet 57.2 ± 0.2 ... Retrieval 62.6 ± 0.1. Cost: thousands of
accelerator hours (11 methods x 5 classifiers of up to 270 epochs, 5 fine-tuning runs per fine-tuned method,
plus sampling 390 x 990 images per DM method and per selection candidate); stages resume, so it can run in pieces
(`--config.stages=...`, `--config.methods=...`).
"""

from pathlib import Path

from jax_aug.study.config_files import study_config


def get_config(arg: str | None = None):
  del arg  # one scale per file: configs/tiny.py is the same study with tiny numbers
  return study_config(Path(__file__).resolve().parent, "paper")
