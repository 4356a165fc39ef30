"""Choices the study makes on validation (paper Sec. 3.2): the learning-rate grid's run by validation loss, and
among candidate augmentation sets (a fine-tuning run's kept checkpoints, Boomerang's strengths) the one whose
classifier has the best validation top-1; that classifier is reused as the method's own run of its set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jax_aug import programs
from jax_aug.data import subsets
from jax_aug.finetune import lr_search
from jax_aug.io import atomic_write_json, read_json
from jax_aug.study import wiring

SELECTION_FILE = "selection.json"
LR_SEARCH_FILE = "lr_search.json"


def progress(items, desc: str):
  """A progress bar over a stage's inner loop (stderr, so stdout keeps one line per stage)."""
  import tqdm

  return tqdm.tqdm(items, desc=desc, leave=False)


def search_learning_rate(method: str, runs: dict[str, dict], workdir: Path, out: Path) -> None:
  """Chooses among the learning-rate grid's fine-tuning runs ({stage name: its factor and learning rates})
  by validation loss; lr_search.json keeps every run's curve for the report."""
  from jax_aug.finetune.checkpoint_policy import EpochLosses
  from jax_aug.finetune.checkpoints import read_progress

  histories, details = {}, {}
  for name, grid_point in runs.items():
    progress = read_progress(workdir / name)
    history = progress["history"]
    histories[name] = [EpochLosses(**h) for h in history]
    details[name] = {
      **grid_point,
      "history": history,
      "best_validation_loss": lr_search.best_validation_loss(histories[name]),
      "initial_val_loss": progress.get("initial_val_loss"),  # before any step (None: a run older than it)
    }
  atomic_write_json(
    out / LR_SEARCH_FILE,
    {
      "method": method,
      "runs": details,
      "chosen": lr_search.choose(histories),
      "criterion": "lowest validation loss over the run's epochs",
    },
  )


def select_candidates(
  method: str,
  candidates: dict[str, Callable[[Path], None]],
  config,
  out: Path,
  *,
  data_dir: Path,
  exclusion: Path | None,
  details: dict,
) -> None:
  """The paper's choice by downstream validation accuracy (Sec. 3.2): for each candidate, its samples
  (`candidates[name](samples_dir)` writes them), resampled set `selection.resample`, and one classifier on
  subset + that set with the seed of the method's own classifier of that set, scored on the validation
  split (and, for reuse by train/<method>/r<i>, on the test split); the best validation top-1 wins. Each
  candidate resumes on its own. `details`: what each candidate is, for the report."""
  r = config.selection.resample
  scores = {}
  for name, make_samples in progress(sorted(candidates.items()), desc=f"select/{method} candidates"):
    cand_dir = out / "candidates" / name
    programs.release_if_near_map_limit(print)  # each candidate loads its own programs (jax_aug/programs.py)
    make_samples(cand_dir / "samples")
    sets = wiring.resample_sets(
      cand_dir / "samples", cand_dir / "resample", data_dir=data_dir, exclusion=exclusion, n_sets=r + 1, seed=config.seed
    )
    result = wiring.train_classifier(
      config.classifier,
      cand_dir,
      data_dir=data_dir,
      exclusion=exclusion,
      subset="subset",
      augmentation=sets[r],
      evaluate_on="test",
      seed=config.seed + r,
      resample_index=r,
    )
    scores[name] = result["validation_top1"]
  # Ties go to the earliest candidate name in sorted order, so the choice is deterministic.
  chosen = max(sorted(scores), key=lambda name: scores[name])
  atomic_write_json(
    out / SELECTION_FILE, {"method": method, "validation_top1": scores, "chosen": chosen, "resample": r, **details}
  )


def select_checkpoint(
  method: str, method_config, config, out: Path, *, workdir: Path, data_dir: Path, models_dir: Path, exclusion: Path | None
) -> None:
  """The checkpoint of the learning-rate search's chosen run whose samples train the best classifier."""
  run = read_json(workdir / "lr_search" / method / LR_SEARCH_FILE)["chosen"]
  finetune_dir = workdir / run
  checkpoints = wiring.finetune_checkpoints(finetune_dir)
  if not checkpoints:
    raise FileNotFoundError(f"{finetune_dir}: fine-tuning of {method} kept no checkpoint to select from")
  samplers = {
    name: (
      lambda samples, path=c["path"]: wiring.sample_finetuned(
        method_config, samples, finetune_dir=finetune_dir, checkpoint=Path(path), data_dir=data_dir, models_dir=models_dir
      )
    )
    for name, c in checkpoints.items()
  }
  select_candidates(
    method,
    samplers,
    config,
    out,
    data_dir=data_dir,
    exclusion=exclusion,
    details={"finetune_run": run, "roles": {name: c["roles"] for name, c in checkpoints.items()}},
  )


def select_boomerang_strength(
  method: str, method_config, config, out: Path, *, data_dir: Path, models_dir: Path, exclusion: Path | None
) -> None:
  """Boomerang's strength (not given by the paper) chosen from its grid like a fine-tuning checkpoint."""
  strengths = {f"strength_{s:g}": float(s) for s in method_config.boomerang_strength_grid}

  def sampler(strength):
    candidate_config = method_config.copy_and_resolve_references()
    candidate_config.boomerang_strength = strength
    return lambda samples: wiring.sample(candidate_config, samples, data_dir=data_dir, models_dir=models_dir)

  select_candidates(
    method,
    {name: sampler(s) for name, s in strengths.items()},
    config,
    out,
    data_dir=data_dir,
    exclusion=exclusion,
    details={"boomerang_strength": strengths},
  )


def reuse_selection_classifier(method: str, r: int, config, workdir: Path, out: Path) -> None:
  """train/<method>/r<r> from the chosen candidate's selection classifier, after checking that it trained on
  the same resampled set with the same seed; the results name where they came from."""
  select_dir = workdir / "select" / method
  selection = read_json(select_dir / SELECTION_FILE)
  candidate = select_dir / "candidates" / selection["chosen"]
  ours, theirs = workdir / "resample" / method / f"set_{r}.jsonl", candidate / "resample" / f"set_{r}.jsonl"
  if subsets.read_manifest(ours) != subsets.read_manifest(theirs):
    raise RuntimeError(
      f"{method}: resampled set {r} ({ours}) differs from the one the selection trained on"
      f" ({theirs}); cannot reuse its classifier"
    )
  results = read_json(wiring.classifier_results_path(candidate))
  if (results["eval_split"], results["seed"], results["resample_index"]) != ("test", config.seed + r, r):
    raise RuntimeError(
      f"{method}: the selection classifier of {candidate} was scored on {results['eval_split']}"
      f" with seed {results['seed']} and set {results['resample_index']}, expected test,"
      f" {config.seed + r}, {r}"
    )
  results["reused_from"] = str(wiring.classifier_results_path(candidate).relative_to(workdir))
  atomic_write_json(wiring.classifier_results_path(out), results)
