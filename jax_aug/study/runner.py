"""The study: from data to Table 1, Figure 5 and Figure 6, as a list of resumable stages.

Stages, in order (each a directory `<workdir>/<name>` and a record in `<workdir>/stages/`):

  check                      the data check: every image of the dataset (drawn first at tiny scale) decoded
                             once; undecodable ones are quarantined (jax_aug.data.check)
  data                       the dataset's splits without quarantined images: 10% subset, validation,
                             20% subset, evaluation split
  retrieval                  retrieval's augmentation set and the class-exclusion list (study-wide)
  models                     tiny scale only: the one tiny random-init SD every DM method starts from
  augment/<method>           sampling-engine methods (prompts; Boomerang with an empty strength grid)
  finetune/<method>/lr<i>    personalization fine-tuning, one run per point of the learning-rate grid
  lr_search/<method>         the grid's run with the lowest validation loss (jax_aug/finetune/lr_search.py)
  select/<method>            candidates (the chosen run's kept checkpoints; Boomerang: one set per strength
                             of its grid), one classifier each on subset + candidate; the best validation
                             top-1 wins and its samples are the method's augmentation set
  resample/<method>          n resampled sets with the subset's per-class counts (excluded classes dropped)
  train/<method>/r<i>        one classifier per resampled set (baselines: per seed), scored on the
                             evaluation split; for a method with a select stage, r<selection.resample> is
                             the chosen candidate's classifier (same data, same seed), reused, not retrained
  report                     Table 1, runs.json, Figure 5, Figure 6, exclusions
  twin/<method>              optional (config.twin_methods): the PyTorch twin of train/<method>/r0 and the
                             report overlaying the two (jax_aug/twin, docs/twin.md)

The DM methods sample every class; the exclusion list is applied when the resampled sets and the
classifiers' splits are drawn, so a method's images never depend on whether retrieval ran first.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable
from pathlib import Path

import ml_collections

from jax_aug import method_kinds, programs
from jax_aug.study import assemble, kinds, selection, wiring
from jax_aug.study import methods as methods_lib
from jax_aug.study import stages as stages_lib
from jax_aug.study.stages import Stage


def plan(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> list[Stage]:
  """Every stage the selected methods need, in an order where upstream stages come first; a method's own
  stages come from its kind (jax_aug/study/kinds.py)."""
  workdir = Path(workdir)
  selected = methods_lib.study_methods(config)
  names = {m.name for m in selected}
  seed = config.seed
  data_dir = workdir / "data"
  stages, world = [], ()
  if config.get("mini_world") is not None:  # configs/mini.py: the world's data and models, prepared first
    stages.append(
      Stage("world", {"mini_world": config.mini_world}, lambda out: wiring.prepare_mini_world(config.mini_world))
    )
    world = ("world",)
  stages += [
    Stage("check", {"data": config.data}, lambda out: wiring.check_data(config.data, out, data_dir=data_dir), world),
    Stage(
      "data",
      {"data": config.data},
      lambda out: wiring.prepare_data(config.data, out, check_dir=workdir / "check"),
      ("check",),
    ),
  ]
  # Retrieval is the only source of the exclusion list, so it runs first whenever it is selected;
  # without it no class is excluded (the report says so).
  retrieval = [m for m in selected if m.kind == method_kinds.RETRIEVAL]
  exclusion = wiring.exclusion_list_path(workdir / "retrieval") if retrieval else None
  after_exclusion = ("data", "retrieval") if retrieval else ("data",)
  dm_methods = [m for m in selected if m.kind in method_kinds.DIFFUSION_KINDS]
  models_dir = workdir / "models"
  seeds = wiring.tiny_model_seeds([config.method_configs.get(m.name) for m in dm_methods])
  context = kinds.PlanContext(
    config, workdir, data_dir, models_dir, exclusion, after_exclusion, ("models",) if seeds else ()
  )
  for method in retrieval:
    stages += kinds.study_kind(method).stages(context, method)
  if seeds:
    stages.append(Stage("models", {"tiny_sd_seeds": seeds}, lambda out: wiring.build_tiny_models(out, seeds)))
  for method in dm_methods:
    stages += kinds.study_kind(method).stages(context, method)

  for method in selected:
    source = kinds.study_kind(method).augmentation_stage(config, method)
    if source is not None:
      stages.append(
        Stage(
          f"resample/{method.name}",
          {"n_resamples": config.n_resamples, "seed": seed},
          lambda out, m=method: wiring.resample_sets(
            kinds.augmentation_dir(config, workdir, m),
            out,
            data_dir=data_dir,
            exclusion=exclusion,
            n_sets=config.n_resamples,
            seed=seed,
          ),
          after_exclusion + (source,),
        )
      )
    for r in range(config.n_resamples):
      if source is not None and source.startswith("select/") and r == config.selection.resample:
        # The selection trained exactly this classifier (same subset + set, same seed) for the chosen
        # candidate: reuse it (paper scale: one ResNet-50 of up to 270 epochs fewer per method).
        stages.append(
          Stage(
            f"train/{method.name}/r{r}",
            {"classifier": config.classifier, "subset": method.subset, "resample": r, "seed": seed, "reused_from": source},
            lambda out, m=method.name, r=r: selection.reuse_selection_classifier(m, r, config, workdir, out),
            after_exclusion + (f"resample/{method.name}", source),
          )
        )
        continue
      # Baselines have no resampled set: their n runs differ only in the classifier's seed.
      stages.append(
        Stage(
          f"train/{method.name}/r{r}",
          {"classifier": config.classifier, "subset": method.subset, "resample": r, "seed": seed},
          lambda out, m=method, r=r, source=source: wiring.train_classifier(
            config.classifier,
            out,
            data_dir=data_dir,
            exclusion=exclusion,
            subset=m.subset,
            augmentation=(workdir / "resample" / m.name / f"set_{r}.jsonl") if source else None,
            evaluate_on=wiring.EVAL_SPLIT,
            seed=seed + r,
            resample_index=r if source else -1,
          ),
          after_exclusion + ((f"resample/{method.name}",) if source else ()),
        )
      )

  trained = tuple(s.name for s in stages if s.name.startswith("train/"))
  # The methods and resamples in the report are its upstream stages: selecting other methods changes the
  # upstream set, which redoes this cheap stage without asking (its own settings are `config.report`).
  stages.append(
    Stage(
      "report",
      {"report": config.report},
      lambda out: assemble.write_study_report(config, workdir, out, exclusion=exclusion),
      after_exclusion + trained,
    )
  )
  # Last, so a twin (a comparison, not part of Table 1) never holds up the report.
  twins = methods_lib.select(config, config.twin_methods) if config.get("twin_methods") else []
  unselected = [m.name for m in twins if m.name not in names]
  if unselected:
    raise ValueError(
      f"config.twin_methods names {unselected}, which config.methods={config.methods!r} does not"
      " select: a twin needs the method's classifier run"
    )
  for method in twins:
    stages.append(
      Stage(
        f"twin/{method.name}",
        {"twin": "torch"},
        lambda out, m=method: wiring.train_twin(workdir / "train" / m.name / "r0", out, workdir=workdir),
        (f"train/{method.name}/r0",),
      )
    )
  return stages


def _enable_compilation_cache(cache_dir: Path) -> None:
  import jax

  jax.config.update("jax_compilation_cache_dir", str(cache_dir))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def split_cpu(cpu_devices: int, log: Callable[[str], None]) -> None:
  """config.cpu_devices: the host's CPU as that many XLA devices (jax_num_cpu_devices), set before JAX starts
  its backends. XLA runs a small model's ops on about one core per device, so the areas that split their batch
  over the devices (sampling, fine-tuning) use more of a CPU's cores this way (docs/study.md). In a process whose
  backends already started (a caller's own JAX work), the study runs on the devices it has, and says so."""
  if not cpu_devices:
    return
  if not isinstance(cpu_devices, int) or cpu_devices < 0:
    raise ValueError(f"config.cpu_devices={cpu_devices!r}: expected 0 (JAX's default) or a number of devices")
  import jax

  try:
    jax.config.update("jax_num_cpu_devices", cpu_devices)
  except RuntimeError:  # the backends started before the study: the setting can no longer apply
    have = len(jax.devices("cpu"))
    if have != cpu_devices:
      log(
        f"config.cpu_devices={cpu_devices}: JAX started in this process before the study, with {have} CPU"
        " device(s); the study runs on those"
      )
    return
  log(f"config.cpu_devices={cpu_devices}: the CPU is split into {len(jax.devices('cpu'))} XLA devices")


def _multihost() -> dict:
  """Stage-record writing and stage barriers for runs over several hosts (jax.distributed)."""
  import jax

  if jax.process_count() == 1:
    return {}
  from jax.experimental import multihost_utils

  return {"is_writer": jax.process_index() == 0, "barrier": multihost_utils.sync_global_devices}


def run_study(config: ml_collections.ConfigDict, workdir: str | os.PathLike, log: Callable[[str], None] = print) -> Path:
  """Runs (or resumes) every selected stage and returns the report directory."""
  split_cpu(config.cpu_devices, log)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.get("twin_methods"):
    # PyTorch twins share the GPU with JAX, which must not preallocate most of it (docs/twin.md).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  if config.compilation_cache:
    _enable_compilation_cache(Path(config.compilation_cache_dir or workdir / ".jax_cache"))
  stage_patterns = stages_lib.comma_separated(config.stages) or ["*"]
  redo, adopt = stages_lib.comma_separated(config.redo), stages_lib.comma_separated(config.adopt)
  all_stages = plan(config, workdir)
  wiring.check_prompt_strategies(config, methods_lib.study_methods(config), workdir / "data")
  patterns = stage_patterns + redo + adopt
  unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(s.name, p) for s in all_stages)]
  if unmatched:
    raise ValueError(
      f"config.stages / config.redo / config.adopt pattern(s) {unmatched} match no stage of this study (a typo?);"
      f" its stages: {[s.name for s in all_stages]}"
    )
  runner = stages_lib.StageRunner(workdir, redo=redo, adopt=adopt, log=log, **_multihost())
  start = time.perf_counter()
  blocked: set[str] = set()
  for index, stage in enumerate(all_stages, start=1):
    position = f"{index}/{len(all_stages)}"
    if not any(fnmatch.fnmatchcase(stage.name, p) for p in stage_patterns):
      if runner.is_done(stage.name) and not (set(stage.upstream) & blocked):
        runner.run(stage.name, stage.config, stage.fn, upstream=stage.upstream, position=position)
      else:
        blocked.add(stage.name)
        log(f"[{position}] {stage.name}: not selected by config.stages, not run")
      continue
    missing = sorted(set(stage.upstream) & blocked)
    if missing:
      raise RuntimeError(
        f"stage {stage.name!r} needs {missing}, which config.stages={config.stages!r} leaves"
        f" unrun: add them to config.stages"
      )
    runner.run(stage.name, stage.config, stage.fn, upstream=stage.upstream, position=position)
    programs.release_if_near_map_limit(log)  # a long study's programs would outgrow Linux's map limit (programs.py)
  log(f"time per stage (this run, {time.perf_counter() - start:.1f} s in all):\n{runner.summary()}")
  report_dir = workdir / "report"
  if runner.is_done("report"):
    log(f"report: {(report_dir / 'report.md').resolve()}")
  return report_dir
