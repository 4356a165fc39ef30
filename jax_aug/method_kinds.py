"""The kinds of augmentation method and, per kind, the function that makes a method's augmentation set alone.

A method config (configs/methods/<name>.py) names its kind in `config.method.kind`; sample.py, retrieve.py
and the study ask this registry instead of testing method names. The functions are named as
"module:function" and imported when asked for, so neither area imports the other to dispatch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

BASELINE = "baseline"  # the real subset alone, no augmentation set
PROMPT = "prompt"  # SD sampled from a prompt strategy (jax_aug.data.prompts)
BOOMERANG = "boomerang"  # SD img2img from the subset images, no prompt
FINETUNED = "finetuned"  # SD fine-tuned on the subset (config.finetune), sampled from a kept checkpoint
RETRIEVAL = "retrieval"  # nearest neighbours in the DM's training data

# kind -> "module:function(config, workdir)" writing the method's augmentation set ("" : the kind has none).
AUGMENTATION_SET_MAKERS: dict[str, str] = {
  BASELINE: "",
  PROMPT: "jax_aug.diffusion.run:sample_augmentation_set",
  BOOMERANG: "jax_aug.diffusion.run:sample_augmentation_set",
  FINETUNED: "jax_aug.finetune.sampling:sample_finetuned",
  RETRIEVAL: "jax_aug.retrieval.pipeline:retrieve",
}
KINDS = tuple(AUGMENTATION_SET_MAKERS)
# Kinds whose images Stable Diffusion samples (they share the study's one tiny SD at tiny scale).
DIFFUSION_KINDS = (PROMPT, BOOMERANG, FINETUNED)


def check_kind(kind: str, method: str = "") -> str:
  if kind not in AUGMENTATION_SET_MAKERS:
    raise ValueError(f"method {method!r}: unknown kind {kind!r}, expected one of {KINDS}")
  return kind


def augmentation_set_maker(kind: str, method: str = "") -> Callable:
  """The function `fn(config, workdir)` that writes the augmentation set of a method of `kind`."""
  target = AUGMENTATION_SET_MAKERS[check_kind(kind, method)]
  if not target:
    raise ValueError(f"method {method!r} is a {kind}: it has no augmentation set to make")
  module, function = target.split(":")
  return getattr(importlib.import_module(module), function)


def make_augmentation_set(config, workdir):
  """sample.py's one call: the augmentation set of the method config `config`, by its kind."""
  return augmentation_set_maker(config.method.kind, config.method.name)(config, workdir)
