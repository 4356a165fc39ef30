"""The study: from data to Table 1, Figure 5 and Figure 6, as a list of resumable stages.

Stages, in order (each a directory `<workdir>/<name>` and a record in `<workdir>/stages/`):

  check                      the data check: every image of the dataset (drawn first at tiny scale) decoded
                             once; undecodable ones are quarantined (jax_aug.data.check)
  data                       the dataset's splits without quarantined images: 10% subset, validation,
                             20% subset, evaluation split
  retrieval                  retrieval's augmentation set and the class-exclusion list (study-wide)
  models                     tiny scale only: the one tiny random-init SD every DM method starts from
  augment/<method>           sampling-engine methods (prompts, Boomerang)
  finetune/<method>          personalization fine-tuning, checkpoints
  select/<method>            samples per checkpoint, one classifier each on the validation split; the
                             best checkpoint's samples are the method's augmentation set
  resample/<method>          n resampled sets with the subset's per-class counts (excluded classes dropped)
  train/<method>/r<i>        one classifier per resampled set (baselines: per seed), scored on the
                             evaluation split
  report                     Table 1, runs.json, Figure 5, Figure 6, exclusions
  twin/<method>              optional (config.twin_methods): the PyTorch twin of train/<method>/r0 and the
                             report overlaying the two (jax_aug/twin, docs/twin.md)

The DM methods sample every class; the exclusion list is applied when the resampled sets and the
classifiers' splits are drawn, so a method's images never depend on whether retrieval ran first.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import time
from pathlib import Path
from typing import Any, Callable

import ml_collections

from jax_aug.io import atomic_write_json, read_json
from jax_aug.study import methods as methods_lib
from jax_aug.study import report as report_lib
from jax_aug.study import stages as stages_lib
from jax_aug.study import wiring

SELECTION_FILE = "selection.json"


def progress(items, desc: str):
  """A progress bar over a stage's inner loop (stderr, so stdout keeps one line per stage)."""
  import tqdm
  return tqdm.tqdm(items, desc=desc, leave=False)


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  config: Any  # what the stage's fingerprint covers: exactly the settings its output depends on
  fn: Callable[[Path], None]
  upstream: tuple[str, ...] = ()


def _patterns(value: str) -> list[str]:
  return [p.strip() for p in str(value).split(",") if p.strip()]


def _augmentation_stage(method: methods_lib.Method) -> str | None:
  """The stage whose output holds the method's augmentation set (None for baselines)."""
  return {"sample": f"augment/{method.name}", "finetune": f"select/{method.name}",
          "retrieval": "retrieval"}.get(method.kind)


def augmentation_dir(workdir: Path, method: methods_lib.Method) -> Path:
  """Where the method's final augmentation set is, once its stage is done."""
  if method.kind == "sample":
    return workdir / "augment" / method.name
  if method.kind == "retrieval":
    return wiring.retrieval_augmentation_dir(workdir / "retrieval")
  if method.kind == "finetune":
    chosen = read_json(workdir / "select" / method.name / SELECTION_FILE)["chosen"]
    return workdir / "select" / method.name / "candidates" / chosen / "samples"
  raise ValueError(f"method {method.name} ({method.kind}) has no augmentation set")


def plan(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> list[Stage]:
  """Every stage the selected methods need, in an order where upstream stages come first."""
  workdir = Path(workdir)
  selected = methods_lib.select(config.methods)
  names = {m.name for m in selected}
  seed = config.seed
  data_dir = workdir / "data"
  stages = [Stage("check", {"data": config.data}, lambda out: wiring.check_data(config.data, out, data_dir=data_dir)),
            Stage("data", {"data": config.data},
                  lambda out: wiring.prepare_data(config.data, out, check_dir=workdir / "check"), ("check",))]
  # Retrieval is the only source of the exclusion list, so it runs first whenever it is selected;
  # without it no class is excluded (the report says so).
  has_retrieval = "retrieval" in names
  exclusion = wiring.exclusion_list_path(workdir / "retrieval") if has_retrieval else None
  after_exclusion = ("data", "retrieval") if has_retrieval else ("data",)
  if has_retrieval:
    rc = config.method.retrieval
    stages.append(Stage("retrieval", {"method": rc}, lambda out: wiring.retrieve(rc, out, data_dir=data_dir),
                        ("data",)))

  dm_methods = [m for m in selected if m.kind in ("sample", "finetune")]
  models_dir = workdir / "models"
  seeds = wiring.tiny_model_seeds([config.method.get(m.name) for m in dm_methods])
  model_upstream = ("models",) if seeds else ()
  if seeds:
    stages.append(Stage("models", {"tiny_sd_seeds": seeds}, lambda out: wiring.build_tiny_models(out, seeds)))

  for method in dm_methods:
    mc = config.method.get(method.name)
    if method.kind == "sample":
      stages.append(Stage(
          f"augment/{method.name}", {"method": mc},
          lambda out, mc=mc: wiring.sample(mc, out, data_dir=data_dir, models_dir=models_dir),
          ("data",) + model_upstream))
    else:
      stages.append(Stage(
          # Only what fine-tuning reads: a change to the sampling settings redoes the selection, not this.
          f"finetune/{method.name}", {"finetune": mc.finetune, "model": mc.model, "data": mc.data},
          lambda out, mc=mc: wiring.finetune(mc, out, data_dir=data_dir, models_dir=models_dir),
          ("data",) + model_upstream))
      stages.append(Stage(
          f"select/{method.name}",
          {"method": mc, "classifier": config.classifier, "selection": config.selection, "seed": seed},
          lambda out, mc=mc, m=method.name: select_checkpoint(
              m, mc, config, out, finetune_dir=workdir / "finetune" / m, data_dir=data_dir,
              models_dir=models_dir, exclusion=exclusion),
          after_exclusion + model_upstream + (f"finetune/{method.name}",)))

  for method in selected:
    source = _augmentation_stage(method)
    if source is not None:
      stages.append(Stage(
          f"resample/{method.name}", {"n_resamples": config.n_resamples, "seed": seed},
          lambda out, m=method: wiring.resample_sets(
              augmentation_dir(workdir, m), out, data_dir=data_dir, exclusion=exclusion,
              n_sets=config.n_resamples, seed=seed),
          after_exclusion + (source,)))
    for r in range(config.n_resamples):
      # Baselines have no resampled set: their n runs differ only in the classifier's seed.
      stages.append(Stage(
          f"train/{method.name}/r{r}",
          {"classifier": config.classifier, "subset": method.subset, "resample": r, "seed": seed},
          lambda out, m=method, r=r, source=source: wiring.train_classifier(
              config.classifier, out, data_dir=data_dir, exclusion=exclusion, subset=m.subset,
              augmentation=(workdir / "resample" / m.name / f"set_{r}.jsonl") if source else None,
              evaluate_on=wiring.EVAL_SPLIT, seed=seed + r, resample_index=r if source else -1),
          after_exclusion + ((f"resample/{method.name}",) if source else ())))

  trained = tuple(s.name for s in stages if s.name.startswith("train/"))
  # The methods and resamples in the report are its upstream stages: selecting other methods changes the
  # upstream set, which redoes this cheap stage without asking (its own settings are `config.report`).
  stages.append(Stage("report", {"report": config.report},
                      lambda out: write_report(config, workdir, out, exclusion=exclusion),
                      after_exclusion + trained))
  # Last, so a twin (a comparison, not part of Table 1) never holds up the report.
  twins = methods_lib.select(config.twin_methods) if config.get("twin_methods") else []
  unselected = [m.name for m in twins if m.name not in names]
  if unselected:
    raise ValueError(f"config.twin_methods names {unselected}, which config.methods={config.methods!r} does not"
                     " select: a twin needs the method's classifier run")
  for method in twins:
    stages.append(Stage(f"twin/{method.name}", {"twin": "torch"},
                        lambda out, m=method: wiring.train_twin(workdir / "train" / m.name / "r0", out),
                        (f"train/{method.name}/r0",)))
  return stages


def select_checkpoint(method: str, method_config, config, out: Path, *, finetune_dir: Path, data_dir: Path,
                      models_dir: Path, exclusion: Path | None) -> None:
  """The paper's checkpoint choice: samples from every kept checkpoint, one classifier each trained on
  subset + those samples (resampled set `selection.resample`), scored on the validation split; the best
  checkpoint's samples become the method's augmentation set. Each candidate resumes on its own."""
  candidates = wiring.finetune_checkpoints(finetune_dir)
  if not candidates:
    raise FileNotFoundError(f"{finetune_dir}: fine-tuning of {method} kept no checkpoint to select from")
  scores = {}
  for name, candidate in progress(sorted(candidates.items()), desc=f"select/{method} checkpoints"):
    cand_dir = out / "candidates" / name
    wiring.sample_finetuned(method_config, cand_dir / "samples", finetune_dir=finetune_dir,
                            checkpoint=Path(candidate["path"]), data_dir=data_dir, models_dir=models_dir)
    sets = wiring.resample_sets(cand_dir / "samples", cand_dir / "resample", data_dir=data_dir,
                                exclusion=exclusion, n_sets=config.selection.resample + 1, seed=config.seed)
    result = wiring.train_classifier(
        config.classifier, cand_dir, data_dir=data_dir, exclusion=exclusion, subset="subset",
        augmentation=sets[config.selection.resample], evaluate_on="validation", seed=config.seed,
        resample_index=config.selection.resample)
    scores[name] = result["top1"]
  # Ties go to the earliest checkpoint name in sorted order, so the choice is deterministic.
  chosen = max(sorted(scores), key=lambda name: scores[name])
  atomic_write_json(out / SELECTION_FILE, {
      "method": method, "validation_top1": scores, "chosen": chosen,
      "roles": {name: c["roles"] for name, c in candidates.items()}})


def examples(records: list[dict], wnids: list[str], per_class: int) -> list[tuple[str, list[str]]]:
  """Figure 5 rows: for each class the first `per_class` images by path (stable across reruns)."""
  rows = []
  for wnid in wnids:
    paths = sorted(r["path"] for r in records if r["wnid"] == wnid)
    rows.append((wnid, paths[:per_class]))
  return rows


def write_report(config, workdir: Path, out: Path, *, exclusion: Path | None) -> None:
  selected = methods_lib.select(config.methods)
  runs = []
  for method in selected:
    for r in range(config.n_resamples):
      path = wiring.classifier_results_path(workdir / "train" / method.name / f"r{r}")
      result = read_json(path)
      runs.append({"method": method.name, "resample": r, "top1": result["top1"],
                   "per_class_top1": result["per_class_top1"], "best_epoch": result["best_epoch"],
                   "results": str(path.relative_to(workdir))})
  data = wiring.study_data(workdir / "data", exclusion)
  wanted = _patterns(config.report.figure5_classes) or data.wnids
  shown = [w for w in wanted if w in set(data.wnids)][:config.report.figure5_max_classes]
  k = config.report.figure5_images_per_class
  figure5 = {"subset": examples(data.split("subset"), shown, k)}
  notes = []
  for method in selected:
    if method.kind != "baseline":
      figure5[method.name] = examples(wiring.load_augmentation(augmentation_dir(workdir, method)), shown, k)
    if method.kind == "finetune":
      selection = read_json(workdir / "select" / method.name / SELECTION_FILE)
      chosen = selection["chosen"]
      scores = ", ".join(f"{name} {top1:.2f}" for name, top1 in sorted(selection["validation_top1"].items()))
      notes.append(f"{method.display}: checkpoint {chosen} ({', '.join(selection['roles'][chosen])}) chosen by"
                   f" validation top-1 (%): {scores}.")
  if exclusion is None:
    notes.append("Retrieval was not selected, so no class was excluded (the exclusion list comes from retrieval).")
  report_lib.write_report(out, runs=runs, eval_split=wiring.EVAL_SPLIT_DESCRIPTION,
                          tiny=config.report.tiny_random_init_models,
                          excluded=wiring.read_exclusions(exclusion) if exclusion else [],
                          class_names=data.class_names, figure5=figure5, notes=notes)


def _enable_compilation_cache(cache_dir: Path) -> None:
  import jax
  jax.config.update("jax_compilation_cache_dir", str(cache_dir))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _multihost() -> dict:
  """Stage-record writing and stage barriers for runs over several hosts (jax.distributed)."""
  import jax
  if jax.process_count() == 1:
    return {}
  from jax.experimental import multihost_utils
  return {"is_writer": jax.process_index() == 0, "barrier": multihost_utils.sync_global_devices}


def run_study(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
              log: Callable[[str], None] = print) -> Path:
  """Runs (or resumes) every selected stage and returns the report directory."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.get("twin_methods"):
    # PyTorch twins share the GPU with JAX, which must not preallocate most of it (docs/twin.md).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  if config.compilation_cache:
    _enable_compilation_cache(Path(config.compilation_cache_dir or workdir / ".jax_cache"))
  stage_patterns = _patterns(config.stages) or ["*"]
  runner = stages_lib.StageRunner(workdir, redo=_patterns(config.redo), log=log, **_multihost())
  all_stages = plan(config, workdir)
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
      raise RuntimeError(f"stage {stage.name!r} needs {missing}, which config.stages={config.stages!r} leaves"
                         f" unrun: add them to config.stages")
    runner.run(stage.name, stage.config, stage.fn, upstream=stage.upstream, position=position)
  log(f"time per stage (this run, {time.perf_counter() - start:.1f} s in all):\n{runner.summary()}")
  report_dir = workdir / "report"
  if runner.is_done("report"):
    log(f"report: {(report_dir / 'report.md').resolve()}")
  return report_dir
