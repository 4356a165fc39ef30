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

import dataclasses
import fnmatch
import os
import time
from pathlib import Path
from typing import Any, Callable

import ml_collections

from jax_aug.data import subsets
from jax_aug.finetune import lr_search
from jax_aug.finetune.trainables import Trainables
from jax_aug.io import atomic_write_json, read_json
from jax_aug.study import methods as methods_lib
from jax_aug.study import protocol
from jax_aug.study import report as report_lib
from jax_aug.study import stages as stages_lib
from jax_aug.study import wiring

SELECTION_FILE = "selection.json"
LR_SEARCH_FILE = "lr_search.json"


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


def selects_on_validation(config, method: methods_lib.Method) -> bool:
  """Whether the method's augmentation set is one of several candidates chosen by the validation top-1 of a
  classifier trained on subset + candidate: fine-tuned methods (their kept checkpoints) and Boomerang
  with a strength grid (a setting the paper does not give)."""
  if method.kind == "finetune":
    return True
  return method.kind == "sample" and bool(config.method[method.name].get("boomerang_strength_grid"))


def _augmentation_stage(config, method: methods_lib.Method) -> str | None:
  """The stage whose output holds the method's augmentation set (None for baselines)."""
  if selects_on_validation(config, method):
    return f"select/{method.name}"
  return {"sample": f"augment/{method.name}", "retrieval": "retrieval"}.get(method.kind)


def augmentation_dir(config, workdir: Path, method: methods_lib.Method) -> Path:
  """Where the method's final augmentation set is, once its stage is done."""
  if selects_on_validation(config, method):
    chosen = read_json(workdir / "select" / method.name / SELECTION_FILE)["chosen"]
    return workdir / "select" / method.name / "candidates" / chosen / "samples"
  if method.kind == "sample":
    return workdir / "augment" / method.name
  if method.kind == "retrieval":
    return wiring.retrieval_augmentation_dir(workdir / "retrieval")
  raise ValueError(f"method {method.name} ({method.kind}) has no augmentation set")


def study_methods(config) -> list[methods_lib.Method]:
  """The selected methods of Table 1 and the selected ablations, in Table 1's row order."""
  chosen = {m.name for m in methods_lib.select(config.methods) + methods_lib.select_ablations(config.ablations)}
  return [m for m in methods_lib.TABLE_ORDER if m.name in chosen]


def plan(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> list[Stage]:
  """Every stage the selected methods need, in an order where upstream stages come first."""
  workdir = Path(workdir)
  selected = study_methods(config)
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

  selection_config = {"classifier": config.classifier, "selection": config.selection, "seed": seed}
  for method in dm_methods:
    mc = config.method.get(method.name)
    if method.kind == "finetune":
      factors = tuple(mc.finetune.lr_search.factors)
      runs = {}
      for index, factor in enumerate(factors):
        run_config = mc.copy_and_resolve_references()
        run_config.finetune = lr_search.run_config(mc.finetune, factor)
        name = f"finetune/{method.name}/lr{index}"
        trained = Trainables.from_config(run_config.finetune.trainables).trainable_groups
        runs[name] = {"factor": factor,
                      "base_learning_rate": {g: run_config.finetune.base_learning_rate[g] for g in trained},
                      "learning_rate": {g: run_config.finetune.learning_rate[g] for g in trained}}
        stages.append(Stage(
            # Only what fine-tuning reads: a change to the sampling settings redoes the selection, not this.
            name, {"finetune": run_config.finetune, "model": mc.model, "data": mc.data},
            lambda out, rc=run_config: wiring.finetune(rc, out, data_dir=data_dir, models_dir=models_dir),
            ("data",) + model_upstream))
      stages.append(Stage(
          f"lr_search/{method.name}", {"factors": factors},
          lambda out, m=method.name, runs=runs: search_learning_rate(m, runs, workdir, out),
          tuple(runs)))
      stages.append(Stage(
          f"select/{method.name}", {"method": mc, **selection_config},
          lambda out, mc=mc, m=method.name: select_checkpoint(
              m, mc, config, out, workdir=workdir, data_dir=data_dir, models_dir=models_dir, exclusion=exclusion),
          after_exclusion + model_upstream + (f"lr_search/{method.name}",)))
    elif selects_on_validation(config, method):
      stages.append(Stage(
          f"select/{method.name}", {"method": mc, **selection_config},
          lambda out, mc=mc, m=method.name: select_boomerang_strength(
              m, mc, config, out, data_dir=data_dir, models_dir=models_dir, exclusion=exclusion),
          after_exclusion + model_upstream))
    else:
      stages.append(Stage(
          f"augment/{method.name}", {"method": mc},
          lambda out, mc=mc: wiring.sample(mc, out, data_dir=data_dir, models_dir=models_dir),
          ("data",) + model_upstream))

  for method in selected:
    source = _augmentation_stage(config, method)
    if source is not None:
      stages.append(Stage(
          f"resample/{method.name}", {"n_resamples": config.n_resamples, "seed": seed},
          lambda out, m=method: wiring.resample_sets(
              augmentation_dir(config, workdir, m), out, data_dir=data_dir, exclusion=exclusion,
              n_sets=config.n_resamples, seed=seed),
          after_exclusion + (source,)))
    for r in range(config.n_resamples):
      if source is not None and source.startswith("select/") and r == config.selection.resample:
        # The selection trained exactly this classifier (same subset + set, same seed) for the chosen
        # candidate: reuse it (paper scale: one ResNet-50 of up to 270 epochs fewer per method).
        stages.append(Stage(
            f"train/{method.name}/r{r}",
            {"classifier": config.classifier, "subset": method.subset, "resample": r, "seed": seed,
             "reused_from": source},
            lambda out, m=method.name, r=r: reuse_selection_classifier(m, r, config, workdir, out),
            after_exclusion + (f"resample/{method.name}", source)))
        continue
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
                        lambda out, m=method: wiring.train_twin(workdir / "train" / m.name / "r0", out,
                                                                workdir=workdir),
                        (f"train/{method.name}/r0",)))
  return stages


def search_learning_rate(method: str, runs: dict[str, dict], workdir: Path, out: Path) -> None:
  """Chooses among the learning-rate grid's fine-tuning runs ({stage name: its factor and learning rates})
  by validation loss; lr_search.json keeps every run's curve for the report."""
  from jax_aug.finetune.checkpoint_policy import EpochLosses
  from jax_aug.finetune.checkpoints import read_progress
  histories, details = {}, {}
  for name, grid_point in runs.items():
    history = read_progress(workdir / name)["history"]
    histories[name] = [EpochLosses(**h) for h in history]
    details[name] = {**grid_point, "history": history,
                     "best_validation_loss": lr_search.best_validation_loss(histories[name])}
  atomic_write_json(out / LR_SEARCH_FILE, {"method": method, "runs": details, "chosen": lr_search.choose(histories),
                                           "criterion": "lowest validation loss over the run's epochs"})


def select_candidates(method: str, candidates: dict[str, Callable[[Path], None]], config, out: Path, *,
                      data_dir: Path, exclusion: Path | None, details: dict) -> None:
  """The paper's choice by downstream validation accuracy (Sec. 3.2): for each candidate, its samples
  (`candidates[name](samples_dir)` writes them), resampled set `selection.resample`, and one classifier on
  subset + that set with the seed of the method's own classifier of that set, scored on the validation
  split (and, for reuse by train/<method>/r<i>, on the test split); the best validation top-1 wins. Each
  candidate resumes on its own. `details`: what each candidate is, for the report."""
  r = config.selection.resample
  scores = {}
  for name, make_samples in progress(sorted(candidates.items()), desc=f"select/{method} candidates"):
    cand_dir = out / "candidates" / name
    make_samples(cand_dir / "samples")
    sets = wiring.resample_sets(cand_dir / "samples", cand_dir / "resample", data_dir=data_dir,
                                exclusion=exclusion, n_sets=r + 1, seed=config.seed)
    result = wiring.train_classifier(
        config.classifier, cand_dir, data_dir=data_dir, exclusion=exclusion, subset="subset",
        augmentation=sets[r], evaluate_on="test", seed=config.seed + r, resample_index=r)
    scores[name] = result["validation_top1"]
  # Ties go to the earliest candidate name in sorted order, so the choice is deterministic.
  chosen = max(sorted(scores), key=lambda name: scores[name])
  atomic_write_json(out / SELECTION_FILE, {"method": method, "validation_top1": scores, "chosen": chosen,
                                           "resample": r, **details})


def select_checkpoint(method: str, method_config, config, out: Path, *, workdir: Path, data_dir: Path,
                      models_dir: Path, exclusion: Path | None) -> None:
  """The checkpoint of the learning-rate search's chosen run whose samples train the best classifier."""
  run = read_json(workdir / "lr_search" / method / LR_SEARCH_FILE)["chosen"]
  finetune_dir = workdir / run
  checkpoints = wiring.finetune_checkpoints(finetune_dir)
  if not checkpoints:
    raise FileNotFoundError(f"{finetune_dir}: fine-tuning of {method} kept no checkpoint to select from")
  samplers = {name: (lambda samples, path=c["path"]: wiring.sample_finetuned(
                  method_config, samples, finetune_dir=finetune_dir, checkpoint=Path(path), data_dir=data_dir,
                  models_dir=models_dir))
              for name, c in checkpoints.items()}
  select_candidates(method, samplers, config, out, data_dir=data_dir, exclusion=exclusion,
                    details={"finetune_run": run, "roles": {name: c["roles"] for name, c in checkpoints.items()}})


def select_boomerang_strength(method: str, method_config, config, out: Path, *, data_dir: Path, models_dir: Path,
                              exclusion: Path | None) -> None:
  """Boomerang's strength (not given by the paper) chosen from its grid like a fine-tuning checkpoint."""
  strengths = {f"strength_{s:g}": float(s) for s in method_config.boomerang_strength_grid}

  def sampler(strength):
    candidate_config = method_config.copy_and_resolve_references()
    candidate_config.boomerang_strength = strength
    return lambda samples: wiring.sample(candidate_config, samples, data_dir=data_dir, models_dir=models_dir)

  select_candidates(method, {name: sampler(s) for name, s in strengths.items()}, config, out,
                    data_dir=data_dir, exclusion=exclusion, details={"boomerang_strength": strengths})


def reuse_selection_classifier(method: str, r: int, config, workdir: Path, out: Path) -> None:
  """train/<method>/r<r> from the chosen candidate's selection classifier, after checking that it trained on
  the same resampled set with the same seed; the results name where they came from."""
  select_dir = workdir / "select" / method
  selection = read_json(select_dir / SELECTION_FILE)
  candidate = select_dir / "candidates" / selection["chosen"]
  ours, theirs = workdir / "resample" / method / f"set_{r}.jsonl", candidate / "resample" / f"set_{r}.jsonl"
  if subsets.read_manifest(ours) != subsets.read_manifest(theirs):
    raise RuntimeError(f"{method}: resampled set {r} ({ours}) differs from the one the selection trained on"
                       f" ({theirs}); cannot reuse its classifier")
  results = read_json(wiring.classifier_results_path(candidate))
  if (results["eval_split"], results["seed"], results["resample_index"]) != ("test", config.seed + r, r):
    raise RuntimeError(f"{method}: the selection classifier of {candidate} was scored on {results['eval_split']}"
                       f" with seed {results['seed']} and set {results['resample_index']}, expected test,"
                       f" {config.seed + r}, {r}")
  results["reused_from"] = str(wiring.classifier_results_path(candidate).relative_to(workdir))
  atomic_write_json(wiring.classifier_results_path(out), results)


def examples(records: list[dict], wnids: list[str], per_class: int) -> list[tuple[str, list[str]]]:
  """Figure 5 rows: for each class the first `per_class` images by path (stable across reruns)."""
  rows = []
  for wnid in wnids:
    paths = sorted(r["path"] for r in records if r["wnid"] == wnid)
    rows.append((wnid, paths[:per_class]))
  return rows


def write_report(config, workdir: Path, out: Path, *, exclusion: Path | None) -> None:
  selected = study_methods(config)
  runs = []
  for method in selected:
    for r in range(config.n_resamples):
      path = wiring.classifier_results_path(workdir / "train" / method.name / f"r{r}")
      result = read_json(path)
      runs.append({"method": method.name, "resample": r, "top1": result["top1"],
                   "per_class_top1": result["per_class_top1"], "best_epoch": result["best_epoch"],
                   "results": str(path.relative_to(workdir)), "reused_from": result.get("reused_from")})
  data = wiring.study_data(workdir / "data", exclusion)
  wanted = _patterns(config.report.figure5_classes) or data.wnids
  shown = [w for w in wanted if w in set(data.wnids)][:config.report.figure5_max_classes]
  k = config.report.figure5_images_per_class
  augmentation = {"subset": data.split("subset")}
  selections, lr_searches = {}, {}
  for method in selected:
    if method.kind != "baseline":
      augmentation[method.name] = wiring.load_augmentation(augmentation_dir(config, workdir, method))
    if selects_on_validation(config, method):
      selections[method.name] = read_json(workdir / "select" / method.name / SELECTION_FILE)
    if method.kind == "finetune":
      lr_searches[method.name] = read_json(workdir / "lr_search" / method.name / LR_SEARCH_FILE)
  figure5 = {name: examples(records, shown, k) for name, records in augmentation.items()}
  notes = []
  if exclusion is None:
    notes.append("Retrieval was not selected, so no class was excluded (the exclusion list comes from retrieval).")
  report_lib.write_report(out, runs=runs, eval_split=wiring.EVAL_SPLIT_DESCRIPTION,
                          tiny=config.report.tiny_random_init_models,
                          excluded=wiring.read_exclusions(exclusion) if exclusion else [],
                          class_names=data.class_names, figure5=figure5, notes=notes,
                          figure5_rows=report_lib.figure5_paper_rows(augmentation, shown, k, config.method),
                          class_images={w: paths[0] for w, paths in examples(augmentation["subset"], data.wnids, 1)},
                          selections=selections, lr_searches=lr_searches,
                          protocol=protocol.protocol_rows(config))


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
