"""The study's stages per kind of method (jax_aug/method_kinds.py), looked up by `config.method.kind`.

Each kind registers (`@register(kind)`) what the planner needs of it: the stages that make a method's
augmentation set (`stages(context, method)`), the stage whose output holds the final set, and where that set
lies once the stage is done. No method is named here: a new method of an existing kind needs nothing here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jax_aug import method_kinds
from jax_aug.finetune import lr_search
from jax_aug.finetune.trainables import Trainables
from jax_aug.io import read_json
from jax_aug.study import selection, wiring
from jax_aug.study.methods import Method
from jax_aug.study.stages import Stage


@dataclasses.dataclass(frozen=True)
class PlanContext:
  """What a kind's stages read: the study config, where the study's data, models and exclusion list are."""

  config: Any
  workdir: Path
  data_dir: Path
  models_dir: Path
  exclusion: Path | None  # retrieval's exclusion list, None without retrieval
  after_exclusion: tuple[str, ...]  # the stages the splits with exclusions applied need
  model_upstream: tuple[str, ...]  # ("models",) when the study builds tiny SDs


@dataclasses.dataclass(frozen=True)
class StudyKind:
  stages: Callable[[PlanContext, Method], list[Stage]]
  # The stage whose directory holds the method's final augmentation set (None: the kind has none).
  augmentation_stage: Callable[[Any, Method], str | None]


KINDS: dict[str, StudyKind] = {}


def register(kind: str, *, augmentation_stage: Callable[[Any, Method], str | None]):
  """Registers the decorated `stages(context, method) -> [Stage]` as the study's stages of `kind`."""

  def decorate(stages: Callable[[PlanContext, Method], list[Stage]]):
    KINDS[method_kinds.check_kind(kind)] = StudyKind(stages, augmentation_stage)
    return stages

  return decorate


def study_kind(method: Method) -> StudyKind:
  if method.kind not in KINDS:
    raise ValueError(f"method {method.name}: the study has no stages for kind {method.kind!r}; known: {sorted(KINDS)}")
  return KINDS[method.kind]


def selects_on_validation(config, method: Method) -> bool:
  """Whether the method's augmentation set is one of several candidates chosen by the validation top-1 of a
  classifier trained on subset + candidate: fine-tuned methods (their kept checkpoints) and Boomerang
  with a strength grid (a setting the paper does not give)."""
  return (study_kind(method).augmentation_stage(config, method) or "").startswith("select/")


def augmentation_dir(config, workdir: Path, method: Method) -> Path:
  """Where the method's final augmentation set is, once its stage is done."""
  stage = study_kind(method).augmentation_stage(config, method)
  if stage is None:
    raise ValueError(f"method {method.name} ({method.kind}) has no augmentation set")
  if stage.startswith("select/"):
    chosen = read_json(workdir / stage / selection.SELECTION_FILE)["chosen"]
    return workdir / stage / "candidates" / chosen / "samples"
  if stage == "retrieval":
    return wiring.retrieval_augmentation_dir(workdir / stage)
  return workdir / stage


@register(method_kinds.BASELINE, augmentation_stage=lambda config, method: None)
def baseline_stages(context: PlanContext, method: Method) -> list[Stage]:
  del context, method  # the subset alone: only its classifiers (planned for every method)
  return []


@register(method_kinds.RETRIEVAL, augmentation_stage=lambda config, method: "retrieval")
def retrieval_stages(context: PlanContext, method: Method) -> list[Stage]:
  """One study-wide stage: retrieval also writes the exclusion list every other method's splits use."""
  rc = context.config.method_configs[method.name]
  return [Stage("retrieval", {"method": rc}, lambda out: wiring.retrieve(rc, out, data_dir=context.data_dir), ("data",))]


def _sampling_stage(context: PlanContext, method: Method) -> Stage:
  mc = context.config.method_configs[method.name]
  return Stage(
    f"augment/{method.name}",
    {"method": mc},
    lambda out: wiring.sample(mc, out, data_dir=context.data_dir, models_dir=context.models_dir),
    ("data",) + context.model_upstream,
  )


@register(method_kinds.PROMPT, augmentation_stage=lambda config, method: f"augment/{method.name}")
def prompt_stages(context: PlanContext, method: Method) -> list[Stage]:
  return [_sampling_stage(context, method)]


def _boomerang_output(config, method: Method) -> str:
  grid = config.method_configs[method.name].get("boomerang_strength_grid")
  return f"select/{method.name}" if grid else f"augment/{method.name}"


@register(method_kinds.BOOMERANG, augmentation_stage=_boomerang_output)
def boomerang_stages(context: PlanContext, method: Method) -> list[Stage]:
  """Its strength chosen from `boomerang_strength_grid` on validation, or, with an empty grid, one set."""
  if not selects_on_validation(context.config, method):
    return [_sampling_stage(context, method)]
  config, mc = context.config, context.config.method_configs[method.name]
  return [
    Stage(
      f"select/{method.name}",
      {"method": mc, **_selection_config(config)},
      lambda out: selection.select_boomerang_strength(
        method.name, mc, config, out, data_dir=context.data_dir, models_dir=context.models_dir, exclusion=context.exclusion
      ),
      context.after_exclusion + context.model_upstream,
    )
  ]


def _selection_config(config) -> dict:
  return {"classifier": config.classifier, "selection": config.selection, "seed": config.seed}


@register(method_kinds.FINETUNED, augmentation_stage=lambda config, method: f"select/{method.name}")
def finetuned_stages(context: PlanContext, method: Method) -> list[Stage]:
  """One fine-tuning run per point of the learning-rate grid, the grid's choice, the checkpoint selection."""
  config, mc = context.config, context.config.method_configs[method.name]
  factors = tuple(mc.finetune.lr_search.factors)
  stages, runs = [], {}
  for index, factor in enumerate(factors):
    run_config = mc.copy_and_resolve_references()
    run_config.finetune = lr_search.run_config(mc.finetune, factor)
    name = f"finetune/{method.name}/lr{index}"
    trained = Trainables.from_config(run_config.finetune.trainables).trainable_groups
    runs[name] = {
      "factor": factor,
      "base_learning_rate": {g: run_config.finetune.base_learning_rate[g] for g in trained},
      "learning_rate": {g: run_config.finetune.learning_rate[g] for g in trained},
    }
    stages.append(
      Stage(
        # Only what fine-tuning reads: a change to the sampling settings redoes the selection, not this.
        name,
        {"finetune": run_config.finetune, "model": mc.model, "data": mc.data},
        lambda out, rc=run_config: wiring.finetune(rc, out, data_dir=context.data_dir, models_dir=context.models_dir),
        ("data",) + context.model_upstream,
      )
    )
  stages.append(
    Stage(
      f"lr_search/{method.name}",
      {"factors": factors},
      lambda out: selection.search_learning_rate(method.name, runs, context.workdir, out),
      tuple(runs),
    )
  )
  stages.append(
    Stage(
      f"select/{method.name}",
      {"method": mc, **_selection_config(config)},
      lambda out: selection.select_checkpoint(
        method.name,
        mc,
        config,
        out,
        workdir=context.workdir,
        data_dir=context.data_dir,
        models_dir=context.models_dir,
        exclusion=context.exclusion,
      ),
      context.after_exclusion + context.model_upstream + (f"lr_search/{method.name}",),
    )
  )
  return stages
