"""The methods of the paper's Table 1, in its order, with the family each belongs to.

`kind` says how the study runner produces the method's training data:
  baseline   the subset alone (no augmentation set; `subset` names which: 10% or 20%)
  sample     the sampling engine, from prompts or from subset images (Boomerang)
  finetune   fine-tune the DM, pick a checkpoint by downstream validation accuracy, sample from it
  retrieval  nearest neighbours of the no-ws prompt in the DM's training data
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Method:
  name: str  # also the file name of configs/methods/<name>.py
  display: str  # as in Table 1
  family: str
  kind: str
  subset: str = "subset"  # the real data it trains on: a split of jax_aug.data.subsets


BASELINE_FAMILY = "baseline"
DM_FAMILIES = ("unconditional DM", "prompt", "personalization")

METHODS: tuple[Method, ...] = (
    Method("baseline_10pct", "10% ImageNet", BASELINE_FAMILY, "baseline", "subset"),
    Method("baseline_20pct", "20% ImageNet", BASELINE_FAMILY, "baseline", "subset_20"),
    Method("boomerang", "Boomerang", "unconditional DM", "sample"),
    Method("simple_prompt_no_ws", "Simple prompt (no ws)", "prompt", "sample"),
    Method("simple_prompt", "Simple prompt", "prompt", "sample"),
    Method("sariyildiz_prompts", "Sariyildiz et al. prompts", "prompt", "sample"),
    Method("clip_prompts", "CLIP prompts", "prompt", "sample"),
    Method("ft_conditioning", "FT conditioning", "personalization", "finetune"),
    Method("ft_cluster_conditioning", "FT cluster conditioning", "personalization", "finetune"),
    Method("imagic", "Imagic (conditioning & DM)", "personalization", "finetune"),
    Method("textual_inversion", "Textual inversion (pseudoword)", "personalization", "finetune"),
    Method("pseudo_word_dm", "Pseudoword+DM", "personalization", "finetune"),
    Method("retrieval", "Retrieval", "retrieval", "retrieval"),
)

BY_NAME = {m.name: m for m in METHODS}
BASELINE = "baseline_10pct"  # what Figure 6 measures improvement against


def select(names: str | list[str] | tuple[str, ...]) -> list[Method]:
  """Methods named in a comma-separated string (or list), in Table 1 order; 'all' selects every one."""
  if isinstance(names, str):
    names = [n.strip() for n in names.split(",") if n.strip()]
  if list(names) == ["all"]:
    return list(METHODS)
  unknown = [n for n in names if n not in BY_NAME]
  if unknown:
    raise ValueError(f"unknown method(s) {unknown} in config.methods: expected 'all' or a comma-separated"
                     f" subset of {[m.name for m in METHODS]}")
  if not names:
    raise ValueError("config.methods selects no method: expected 'all' or comma-separated method names")
  return [m for m in METHODS if m.name in set(names)]
