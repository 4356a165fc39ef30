"""Retrieval (paper Table 1: 62.6 ± 0.1 top-1): 130 nearest LAION neighbours per class of "A photo of
w(n)." in CLIP ViT-L/14 space, aesthetic >= 5, NSFW-free, deduplicated, k raised gradually.

  python retrieve.py --config=configs/methods/retrieval.py:tiny --workdir=runs/retrieval

Tiny: 6 synthetic classes, 4 images each, tiny random CLIP, local files; about a minute on a 2-core CPU
(mostly JAX compilation). Paper: needs a self-hosted LAION index (configs/base/retrieval.py, docs/retrieval.md).
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(__file__, arg, kind="retrieval", display_name="Retrieval")
