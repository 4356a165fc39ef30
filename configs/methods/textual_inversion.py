"""Textual inversion (pseudo-word, method 8): a new token per class, only its embedding trains.

The token `<wnid>` starts as the embedding of the last word of the class's first lemma (mean over its
BPE tokens when it splits) and is trained inside textual-inversion templates.

  python finetune_dm.py --config=configs/methods/textual_inversion.py:tiny --workdir=runs/textual_inversion
  python sample.py --config=configs/methods/textual_inversion.py:tiny --config.finetune.workdir=runs/textual_inversion \
      --workdir=runs/textual_inversion_samples

tiny: a tiny random SD on the synthetic ImageNet, seconds on a CPU; paper: SD v1.4 on the 10% subset.
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(
    __file__, arg, kind="finetuned", display_name="Textual inversion (pseudoword)", conditioning="pseudo_word"
  )
