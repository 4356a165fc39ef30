"""Table 1 of the paper: its row order and numbers, the paper's ablations, and the study's methods as rows.

A method is defined by its config file alone (configs/methods/<name>.py, `config.method`: kind, display
name, family, prompt strategy); this module holds only what the paper's Table 1 adds: the order of its rows,
its numbers, and its ablations (a method's config with one setting changed). A method Table 1 does not have
(a new one) gets a row after the paper's, with no paper number.
"""

from __future__ import annotations

import dataclasses

from jax_aug import method_kinds
from jax_aug.study.stages import comma_separated


@dataclasses.dataclass(frozen=True)
class Method:
  """A row of Table 1 as the study runs it; everything but the paper's numbers comes from the method config."""

  name: str  # the method config's name (ablations: the name of their study block)
  display: str  # as in Table 1
  family: str
  kind: str  # jax_aug/method_kinds.py
  subset: str = "subset"  # the real data it trains on: a split of jax_aug.data.subsets
  # The paper's Table 1 top-1 (%) and its standard error (None where the paper gives none).
  paper_top1: float | None = None
  paper_standard_error: float | None = None
  ablation_of: str = ""  # ablations: the Table 1 method they vary


@dataclasses.dataclass(frozen=True)
class Ablation:
  name: str
  ablation_of: str
  display: str
  # The settings that differ from the varied method's config ({dotted config path: value}, applied by
  # jax_aug.study.config_files.study_config).
  overrides: tuple[tuple[str, object], ...]
  paper_top1: float | None = None
  paper_standard_error: float | None = None


BASELINE_FAMILY = "baseline"
DM_FAMILIES = ("unconditional DM", "prompt", "personalization")
BASELINE = "baseline_10pct"  # what Figure 6 measures improvement against

# Table 1 of the paper, in its order, with its numbers (../shared/PROTOCOL.md): (method, top-1, SE).
TABLE1: tuple[tuple[str, float, float], ...] = (
  ("baseline_10pct", 57.2, 0.2),
  ("baseline_20pct", 70.2, 0.3),
  ("boomerang", 56.3, 0.3),
  ("simple_prompt_no_ws", 60.0, 0.3),
  ("simple_prompt", 60.1, 0.2),
  ("sariyildiz_prompts", 60.8, 0.2),
  ("clip_prompts", 60.9, 0.2),
  ("ft_conditioning", 60.8, 0.1),
  ("ft_cluster_conditioning", 60.9, 0.2),
  ("imagic", 61.0, 0.3),
  ("textual_inversion", 61.0, 0.4),
  ("pseudo_word_dm", 61.2, 0.2),
  ("retrieval", 62.6, 0.1),
)
TABLE1_NAMES = tuple(name for name, _, _ in TABLE1)

# The paper's ablations (Sec. 4.4: k = 5 clusters "slightly improves the accuracy by 0.1 percentage points
# over using k = 1. For larger k = 10 and k = 15, performance decreased (60.8 ± 0.2 and 60.6 ± 0.3
# accuracy)"; Sec. 3.2: "providing multiple lemmas led to better performance than using only the first
# lemma of a synset", no number). k = 1: 60.9 - 0.1, no standard error given.
ABLATIONS: tuple[Ablation, ...] = (
  Ablation(
    "ft_cluster_conditioning_k1",
    "ft_cluster_conditioning",
    "FT cluster conditioning, k = 1",
    (("finetune.trainables.clusters_per_class", 1),),
    60.8,
  ),
  Ablation(
    "ft_cluster_conditioning_k10",
    "ft_cluster_conditioning",
    "FT cluster conditioning, k = 10",
    (("finetune.trainables.clusters_per_class", 10),),
    60.8,
    0.2,
  ),
  Ablation(
    "ft_cluster_conditioning_k15",
    "ft_cluster_conditioning",
    "FT cluster conditioning, k = 15",
    (("finetune.trainables.clusters_per_class", 15),),
    60.6,
    0.3,
  ),
  Ablation("simple_prompt_first_lemma", "simple_prompt", "Simple prompt, first lemma only", (("prompt_lemmas", "first"),)),
)
ABLATION_BY_NAME = {a.name: a for a in ABLATIONS}


def _row(name: str, method_config) -> Method:
  """The Table 1 row of the study block `name` (a method config, or an ablation's varied copy of one)."""
  block = method_config.method
  kind = method_kinds.check_kind(block.kind, name)
  subset = method_config.train_manifests[0] if kind == method_kinds.BASELINE else "subset"
  ablation = ABLATION_BY_NAME.get(name)
  if ablation is not None:
    return Method(
      name,
      f"{ablation.display} (ablation)",
      block.family,
      kind,
      subset,
      ablation.paper_top1,
      ablation.paper_standard_error,
      ablation.ablation_of,
    )
  paper = {n: (top1, se) for n, top1, se in TABLE1}.get(name, (None, None))
  return Method(name, block.display_name, block.family, kind, subset, *paper)


def all_methods(config) -> list[Method]:
  """Every method and ablation of the study config (`config.method_configs`) as Table 1 rows, in its order
  (each ablation right after the method it varies), then the methods Table 1 does not have, by name."""
  blocks = config.method_configs
  order = [*TABLE1_NAMES, *sorted(n for n in blocks if n not in TABLE1_NAMES and n not in ABLATION_BY_NAME)]
  names = [row for name in order for row in (name, *(a.name for a in ABLATIONS if a.ablation_of == name))]
  return [_row(name, blocks[name]) for name in names if name in blocks]


def select(config, names: str) -> list[Method]:
  """The methods (not ablations) named in a comma-separated string, in Table 1 order; 'all' selects every
  method of the study config."""
  methods = [m for m in all_methods(config) if not m.ablation_of]
  names = comma_separated(names)
  if names == ["all"]:
    return methods
  unknown = [n for n in names if n not in {m.name for m in methods}]
  if unknown:
    raise ValueError(
      f"unknown method(s) {unknown} in config.methods: expected 'all' or a comma-separated"
      f" subset of {[m.name for m in methods]}"
    )
  if not names:
    raise ValueError("config.methods selects no method: expected 'all' or comma-separated method names")
  return [m for m in methods if m.name in set(names)]


def select_ablations(config, names: str) -> list[Method]:
  """Ablations named in a comma-separated string ('' selects none, 'all' every one), in Table 1 order."""
  ablations = [m for m in all_methods(config) if m.ablation_of]
  names = comma_separated(names)
  if names == ["all"]:
    return ablations
  unknown = [n for n in names if n not in {m.name for m in ablations}]
  if unknown:
    raise ValueError(
      f"unknown ablation(s) {unknown} in config.ablations: expected '', 'all' or a"
      f" comma-separated subset of {[m.name for m in ablations]}"
    )
  return [m for m in ablations if m.name in set(names)]


def study_methods(config) -> list[Method]:
  """The selected methods and the selected ablations, in Table 1's row order."""
  chosen = {m.name for m in select(config, config.methods) + select_ablations(config, config.ablations)}
  return [m for m in all_methods(config) if m.name in chosen]
