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
  name: str  # also the file name of configs/methods/<name>.py (ablations: the name of their study block)
  display: str  # as in Table 1
  family: str
  kind: str
  subset: str = "subset"  # the real data it trains on: a split of jax_aug.data.subsets
  # The paper's Table 1 top-1 (%) and its standard error (None where the paper gives none).
  paper_top1: float | None = None
  paper_standard_error: float | None = None
  # Ablations: the Table 1 method they vary, and the settings that differ from its config
  # ({dotted config path: value}, applied by jax_aug.study.config_files.study_config).
  ablation_of: str = ""
  overrides: tuple[tuple[str, object], ...] = ()


BASELINE_FAMILY = "baseline"
DM_FAMILIES = ("unconditional DM", "prompt", "personalization")

# Table 1 of the paper, in its order, with its numbers (../shared/PROTOCOL.md).
METHODS: tuple[Method, ...] = (
    Method("baseline_10pct", "10% ImageNet", BASELINE_FAMILY, "baseline", "subset", 57.2, 0.2),
    Method("baseline_20pct", "20% ImageNet", BASELINE_FAMILY, "baseline", "subset_20", 70.2, 0.3),
    Method("boomerang", "Boomerang", "unconditional DM", "sample", paper_top1=56.3, paper_standard_error=0.3),
    Method("simple_prompt_no_ws", "Simple prompt (no ws)", "prompt", "sample", paper_top1=60.0,
           paper_standard_error=0.3),
    Method("simple_prompt", "Simple prompt", "prompt", "sample", paper_top1=60.1, paper_standard_error=0.2),
    Method("sariyildiz_prompts", "Sariyildiz et al. prompts", "prompt", "sample", paper_top1=60.8,
           paper_standard_error=0.2),
    Method("clip_prompts", "CLIP prompts", "prompt", "sample", paper_top1=60.9, paper_standard_error=0.2),
    Method("ft_conditioning", "FT conditioning", "personalization", "finetune", paper_top1=60.8,
           paper_standard_error=0.1),
    Method("ft_cluster_conditioning", "FT cluster conditioning", "personalization", "finetune", paper_top1=60.9,
           paper_standard_error=0.2),
    Method("imagic", "Imagic (conditioning & DM)", "personalization", "finetune", paper_top1=61.0,
           paper_standard_error=0.3),
    Method("textual_inversion", "Textual inversion (pseudoword)", "personalization", "finetune", paper_top1=61.0,
           paper_standard_error=0.4),
    Method("pseudo_word_dm", "Pseudoword+DM", "personalization", "finetune", paper_top1=61.2,
           paper_standard_error=0.2),
    Method("retrieval", "Retrieval", "retrieval", "retrieval", paper_top1=62.6, paper_standard_error=0.1),
)

BY_NAME = {m.name: m for m in METHODS}


def _ablation(name: str, base: str, display: str, overrides: dict, top1: float | None = None,
              se: float | None = None) -> Method:
  of = BY_NAME[base]
  return Method(name, f"{display} (ablation)", of.family, of.kind, of.subset, top1, se, base,
                tuple(sorted(overrides.items())))


# The paper's ablations (Sec. 4.4: k = 5 clusters "slightly improves the accuracy by 0.1 percentage points
# over using k = 1. For larger k = 10 and k = 15, performance decreased (60.8 ± 0.2 and 60.6 ± 0.3
# accuracy)"; Sec. 3.2: "providing multiple lemmas led to better performance than using only the first
# lemma of a synset", no number). k = 1: 60.9 - 0.1, no standard error given.
ABLATIONS: tuple[Method, ...] = (
    _ablation("ft_cluster_conditioning_k1", "ft_cluster_conditioning", "FT cluster conditioning, k = 1",
              {"finetune.trainables.clusters_per_class": 1}, 60.8),
    _ablation("ft_cluster_conditioning_k10", "ft_cluster_conditioning", "FT cluster conditioning, k = 10",
              {"finetune.trainables.clusters_per_class": 10}, 60.8, 0.2),
    _ablation("ft_cluster_conditioning_k15", "ft_cluster_conditioning", "FT cluster conditioning, k = 15",
              {"finetune.trainables.clusters_per_class": 15}, 60.6, 0.3),
    _ablation("simple_prompt_first_lemma", "simple_prompt", "Simple prompt, first lemma only",
              {"prompt_lemmas": "first"}),
)
ABLATION_BY_NAME = {m.name: m for m in ABLATIONS}
# Table 1's rows: the paper's order, each ablation right after the method it varies.
TABLE_ORDER: tuple[Method, ...] = tuple(
    row for m in METHODS for row in (m, *(a for a in ABLATIONS if a.ablation_of == m.name)))
ALL_BY_NAME = {m.name: m for m in TABLE_ORDER}
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


def select_ablations(names: str) -> list[Method]:
  """Ablations named in a comma-separated string ('' selects none, 'all' every one), in Table 1 order."""
  names = [n.strip() for n in str(names).split(",") if n.strip()]
  if names == ["all"]:
    return list(ABLATIONS)
  unknown = [n for n in names if n not in ABLATION_BY_NAME]
  if unknown:
    raise ValueError(f"unknown ablation(s) {unknown} in config.ablations: expected '', 'all' or a"
                     f" comma-separated subset of {[m.name for m in ABLATIONS]}")
  return [m for m in ABLATIONS if m.name in set(names)]
