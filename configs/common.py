"""What every method config (configs/methods/<name>.py) shares: its area blocks, its `method` block, and the
big_vision-style argument `<scale>[,key=value,...]`.

A method config file is its whole definition: `method_config(__file__, arg, kind=..., display_name=...,
family=..., ...)`, the method's name being the file's name. `config.method` then holds

  name             the file's stem: the study's stage names, the augmentation set's `method` field
  kind             jax_aug/method_kinds.py: baseline | prompt | boomerang | finetuned | retrieval
  display_name     Table 1's row label
  family           baseline | unconditional DM | prompt | personalization | retrieval (Figure 1's groups)
  prompt_strategy  prompt kind: a strategy registered in jax_aug/data/prompts.py (`@prompts.strategy`)

and the area blocks follow the kind: baseline the classifier block (configs/base/classifier.py) with the
split it trains on; retrieval configs/base/retrieval.py; the diffusion kinds configs/base/diffusion.py at the
top (sample.py) plus, fine-tuned, configs/base/finetune.py under `finetune` with `finetune.trainables`
(what trains: conditioning, clusters_per_class, train_unet). Every kind carries the data block as `data`
except retrieval. `arg` = "paper,images_per_class=50": the scale, then overrides of existing fields (dotted
paths; typed by the field; an unknown key is refused).
"""

from pathlib import Path

import ml_collections

from jax_aug import method_kinds
from jax_aug.study.config_files import apply_overrides, base_config, parse_arg

CONFIGS = Path(__file__).resolve().parent


def _area_blocks(kind: str, scale: str, train_split: str) -> ml_collections.ConfigDict:
  if kind == method_kinds.BASELINE:
    config = base_config(CONFIGS, "classifier", scale)
    config.train_manifests = (train_split,)
    config.validation_manifest = "validation"
    config.test_manifest = "test"
  elif kind == method_kinds.RETRIEVAL:
    return base_config(CONFIGS, "retrieval", scale)
  else:
    config = base_config(CONFIGS, "diffusion", scale)
  config.data = base_config(CONFIGS, "data", scale)
  if kind == method_kinds.FINETUNED:
    config.finetune = base_config(CONFIGS, "finetune", scale)
  return config


def method_config(
  config_file: str,
  arg: str,
  *,
  kind: str,
  display_name: str,
  family: str,
  prompt_strategy: str = "",
  trainables: dict | None = None,
  train_split: str = "subset",
  customize=None,
) -> ml_collections.ConfigDict:
  """The config of the method defined in `config_file` at `arg`; `trainables` (fine-tuned kind) is
  `finetune.trainables`, `train_split` the baseline's split, `customize(config, scale)` the method's own
  settings, applied before the argument's overrides."""
  name = Path(config_file).stem
  method_kinds.check_kind(kind, name)
  if (kind == method_kinds.PROMPT) != bool(prompt_strategy):
    raise ValueError(
      f"{config_file}: a prompt_strategy is given for the prompt kind and only for it (kind {kind!r},"
      f" prompt_strategy {prompt_strategy!r})"
    )
  if (kind == method_kinds.FINETUNED) != (trainables is not None):
    raise ValueError(f"{config_file}: trainables are given for the finetuned kind and only for it (kind {kind!r})")
  scale, overrides = parse_arg(arg)
  config = _area_blocks(kind, scale, train_split)
  config.method = ml_collections.ConfigDict(
    {"name": name, "kind": kind, "display_name": display_name, "family": family, "prompt_strategy": prompt_strategy}
  )
  if trainables is not None:
    config.finetune.trainables = ml_collections.ConfigDict(trainables)
  if customize is not None:
    customize(config, scale)
  return apply_overrides(config, overrides)
