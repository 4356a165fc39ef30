"""What every method config (configs/methods/<name>.py) shares: its area blocks, its `method` block, and the
big_vision-style argument `<scale>[,key=value,...]`.

A method config file is its whole definition: `method_config(__file__, arg, kind=..., display_name=...,
...)`, the method's name being the file's name. `config.method` then holds

  name             the file's stem: the study's stage names, the augmentation set's `method` field
  kind             jax_aug/method_kinds.py: baseline | prompt | boomerang | finetuned | retrieval
  display_name     Table 1's row label
  family           Figure 1's group: the kind's (FAMILY_OF_KIND) unless `family=` names another
  prompt_strategy  prompt kind: a strategy registered in jax_aug/data/prompts.py (`@prompts.strategy`)

and the area blocks follow the kind: baseline the classifier block (configs/base/classifier.py) with the
split it trains on; retrieval configs/base/retrieval.py; the diffusion kinds configs/base/diffusion.py at the
top (sample.py) plus, fine-tuned, configs/base/finetune.py under `finetune` with `finetune.trainables`
(what trains: the `conditioning=`, `clusters_per_class=`, `train_unet=` arguments). Every kind carries the
data block as `data` except retrieval. `arg` = "paper,images_per_class=50": the scale, then overrides of
existing fields (dotted paths; typed by the field; an unknown key is refused).
"""

from pathlib import Path

import ml_collections

from jax_aug import method_kinds
from jax_aug.study.config_files import apply_overrides, base_config, parse_arg

CONFIGS = Path(__file__).resolve().parent
# Figure 1's group of each kind (a method may name another with `family=`).
FAMILY_OF_KIND = {
  method_kinds.BASELINE: "baseline",
  method_kinds.PROMPT: "prompt",
  method_kinds.BOOMERANG: "unconditional DM",
  method_kinds.FINETUNED: "personalization",
  method_kinds.RETRIEVAL: "retrieval",
}


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
  family: str = "",
  prompt_strategy: str = "",
  conditioning: str = "",
  clusters_per_class: int = 1,
  train_unet: bool = False,
  train_split: str = "subset",
  customize=None,
) -> ml_collections.ConfigDict:
  """The config of the method defined in `config_file` at `arg`; `family` defaults to its kind's
  (`FAMILY_OF_KIND`); `conditioning`, `clusters_per_class`, `train_unet` (fine-tuned kind) make
  `finetune.trainables` (`train_unet` also splits the trainable state: `finetune.parameter_sharding="fsdp"`);
  `train_split` is the baseline's split; `customize(config, scale)` sets the method's own settings, applied
  before the argument's overrides."""
  name = Path(config_file).stem
  method_kinds.check_kind(kind, name)
  if (kind == method_kinds.PROMPT) != bool(prompt_strategy):
    raise ValueError(
      f"{config_file}: a prompt_strategy is given for the prompt kind and only for it (kind {kind!r},"
      f" prompt_strategy {prompt_strategy!r})"
    )
  if (kind == method_kinds.FINETUNED) != bool(conditioning):
    raise ValueError(f"{config_file}: a conditioning is given for the finetuned kind and only for it (kind {kind!r})")
  scale, overrides = parse_arg(arg)
  config = _area_blocks(kind, scale, train_split)
  config.method = ml_collections.ConfigDict(
    {
      "name": name,
      "kind": kind,
      "display_name": display_name,
      "family": family or FAMILY_OF_KIND[kind],
      "prompt_strategy": prompt_strategy,
    }
  )
  if conditioning:
    config.finetune.trainables = ml_collections.ConfigDict(
      {"conditioning": conditioning, "clusters_per_class": clusters_per_class, "train_unet": train_unet}
    )
    if train_unet:  # so that the U-Net's float32 state + AdamW fits a 16 GiB chip (docs/plan.md)
      config.finetune.parameter_sharding = "fsdp"
  if customize is not None:
    customize(config, scale)
  return apply_overrides(config, overrides)
