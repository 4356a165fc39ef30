"""Simple prompt, no white space (method 2): "A photo of w(n)." (also the retrieval query).

  python sample.py --config=configs/methods/simple_prompt_no_ws.py:tiny --workdir=runs/simple_prompt_no_ws

tiny: a tiny random SD, 2 images per class at 32 px, seconds on a CPU; paper: SD v1.4, 390 per class at
512 px, 50 PNDM steps, guidance 7.5 (docs/diffusion.md: throughput).
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import load_module

common = load_module(Path(__file__).resolve().parents[1] / "common.py")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  return common.method_config(
    __file__, arg, kind="prompt", display_name="Simple prompt (no ws)", prompt_strategy="simple_no_ws"
  )
