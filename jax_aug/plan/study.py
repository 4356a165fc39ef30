"""The plan of a whole study config for one target: every planned hot step compiled (jax_aug.plan.compile),
memory fit against the device's HBM, time per call at a stated utilization, and the study's chip-hours
from its stage counts. Writes plan.json; `table` and `summary` format it for the terminal.

Stage counts (per classifier run, upper bounds: every run trains to the config's max_epochs):
  baseline_10pct / baseline_20pct   1 run on the 10% / 20% subset
  every other method                n_resamples runs on the subset + an equally large augmentation set
  methods chosen on validation      + one selection run per candidate (fine-tuned: the kept checkpoints,
  (kinds.selects_on_validation)    keep_epochs up to max_epochs + best train + best val; Boomerang: its
                                    strength grid), - 1: the chosen candidate's run is reused as resample
                                    `selection.resample`
Each epoch: ceil(train / batch) train steps and ceil(validation / eval batch) eval steps; the validation
split is as large as the subset. Fine-tuning: one run per point of the method's learning-rate grid
(`finetune.lr_search.factors`), max_epochs epochs of ceil(subset / batch) steps (its per-epoch validation loss is not planned yet). Paper-scale image counts use ILSVRC2012's 1,281,167 train images.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

from ml_collections import ConfigDict

from jax_aug import io, method_kinds
from jax_aug.data import subsets
from jax_aug.plan import hot_steps
from jax_aug.plan.compile import StepCost, compile_step
from jax_aug.plan.targets import GIB, Target, resolve
from jax_aug.study import methods as methods_lib
from jax_aug.study import kinds

PLAN_FILE = "plan.json"
# Model FLOPs utilization assumed for time estimates (a well-tuned convnet / U-Net step reaches 0.3..0.5).
DEFAULT_UTILIZATION = 0.4
ILSVRC2012_TRAIN_IMAGES = 1_281_167
ILSVRC2012_CLASSES = 1000
# Steps compiled by this module so far; the rest of the study's hot steps are listed as not yet planned.
NOT_YET_PLANNED = ("finetune validation (eval_sums)", "sample/txt2img denoise loop", "sample/img2img denoise loop",
                   "inception_v3/features", "clip/text_query")


class DoesNotFit(ValueError):
  """Raised by `check_fits`; the message names every stage that does not fit and by how much."""


def _num_classes(config: ConfigDict) -> int:
  data = config.data
  if data.wnids:
    return len(data.wnids)
  excluded = subsets.load_exclusions(data.excluded_classes) if data.excluded_classes else {}
  return ILSVRC2012_CLASSES - len(excluded)


def _images_per_class(config: ConfigDict) -> float:
  data = config.data
  if data.get("synthetic") is not None:
    return data.synthetic.train_per_class
  return ILSVRC2012_TRAIN_IMAGES / ILSVRC2012_CLASSES


def _split_images(config: ConfigDict, fraction: float) -> int:
  return _num_classes(config) * subsets.fraction_size(round(_images_per_class(config)), fraction)


def _selection_candidates(method_config: ConfigDict) -> int:
  """How many candidates a method chosen on validation trains a selection classifier for."""
  if method_config.get("finetune") is None:
    return len(method_config.boomerang_strength_grid)
  policy = method_config.finetune.policy
  return len([e for e in policy.keep_epochs if e <= policy.max_epochs]) + (2 if policy.keep_best else 0)


def classifier_runs(config: ConfigDict) -> list[dict]:
  """{"method", "runs", "train_images", "validation_images"} per method of config.methods (see above)."""
  subset = _split_images(config, config.data.subset_fraction)
  rows = []
  for method in methods_lib.select(config, config.methods):
    if method.kind == method_kinds.BASELINE:
      fraction = config.data.upper_bound_fraction if method.subset == "subset_20" else config.data.subset_fraction
      runs, train = 1, _split_images(config, fraction)
    else:
      runs, train = config.n_resamples, 2 * subset
      if kinds.selects_on_validation(config, method):
        runs += _selection_candidates(config.method_configs[method.name]) - 1  # the chosen one is reused
    rows.append({"method": method.name, "runs": runs, "train_images": train, "validation_images": subset})
  return rows


def study_hours(config: ConfigDict, costs: dict[str, StepCost], target: Target, utilization: float) -> dict:
  """Chip-hours of the planned stages (classifier runs, fine-tuning runs), from the step times at `utilization`."""
  peak = target.peak_flops()
  if peak is None:
    return {"note": f"no peak FLOP/s known for {target.devices[0].device_kind}: no time estimate"}
  refused = [stage for stage, cost in costs.items() if cost.refused is not None]
  if refused:
    return {"note": f"no time estimate: {', '.join(refused)} does not compile for {target.name}"}
  classifier = config.classifier
  train_s = costs["classifier/train"].seconds(peak, utilization)
  eval_s = costs["classifier/eval"].seconds(peak, utilization)
  chips = len(target.devices) / target.devices_per_chip
  finetune_rows, finetune_total = [], 0.0
  for method in methods_lib.select(config, config.methods):
    if method.kind != method_kinds.FINETUNED:
      continue
    ft = config.method_configs[method.name].finetune
    train = _split_images(config, config.data.subset_fraction)  # fine-tuning trains on the 10% subset
    steps = math.ceil(train / ft.batch_size)
    grid = len(ft.lr_search.factors)
    seconds = grid * ft.policy.max_epochs * steps * costs[f"finetune/{method.name}/train"].seconds(peak, utilization)
    hours = seconds * chips / 3600
    finetune_total += hours
    finetune_rows.append({"method": method.name, "runs": grid, "train_images": train,
                          "epochs_upper_bound": ft.policy.max_epochs, "train_steps_per_epoch": steps,
                          "chip_hours": hours})
  rows, total = [], 0.0
  for run in classifier_runs(config):
    steps = math.ceil(run["train_images"] / classifier.global_batch_size)
    evals = math.ceil(run["validation_images"] / classifier.eval_batch_size)
    epochs = classifier.schedule.max_epochs
    seconds = run["runs"] * epochs * (steps * train_s + evals * eval_s)
    hours = seconds * chips / 3600
    total += hours
    rows.append({**run, "epochs_upper_bound": epochs, "train_steps_per_epoch": steps,
                 "eval_steps_per_epoch": evals, "chip_hours": hours})
  return {"utilization": utilization, "classifier_runs": rows, "classifier_chip_hours": total,
          "finetune_runs": finetune_rows, "finetune_chip_hours": finetune_total,
          "chip_hours": total + finetune_total, "not_yet_planned": list(NOT_YET_PLANNED)}


def plan_rows(costs: dict[str, StepCost], target: Target, utilization: float) -> list[dict]:
  hbm, peak = target.hbm_bytes(), target.peak_flops()
  rows = []
  for stage, cost in costs.items():
    rows.append({**cost.to_json(), "hbm_bytes": hbm,
                 "fits": None if hbm is None else cost.fits(hbm),
                 "seconds_per_call": None if peak is None else cost.seconds(peak, utilization)})
  return rows


def table(rows: list[dict]) -> str:
  """The terminal table: one line per stage (memory per device in GiB, 3 significant digits)."""
  header = (f"{'stage':<18} {'per call':<24} {'args':>9} {'temp':>9} {'out':>9} {'aliased':>9} {'total GiB':>9}"
            f" {'HBM GiB':>8}  {'fits':<13} {'FLOP/device':>11} {'s/call':>9}")
  lines = [header, "-" * len(header)]
  for r in rows:
    hbm = "?" if r["hbm_bytes"] is None else f"{r['hbm_bytes'] / GIB:.1f}"
    fits = "unknown" if r["fits"] is None else ("fits" if r["fits"] else "does not fit")
    seconds = "?" if r["seconds_per_call"] is None else f"{r['seconds_per_call']:.3g}"
    if r["refused"] is not None:
      lines.append(f"{r['stage']:<18} {r['unit']:<24} {'(the TPU compiler refused it, see below)':>49} {hbm:>8}"
                   f"  {fits:<13}")
      continue
    gib = [f"{r[k] / GIB:>9.3g}" for k in ("argument_bytes", "temp_bytes", "output_bytes", "alias_bytes")]
    lines.append(f"{r['stage']:<18} {r['unit']:<24} {' '.join(gib)} {r['peak_gib']:>9.3g} {hbm:>8}  {fits:<13}"
                 f" {r['flops_per_device']:>11.3g} {seconds:>9}")
  return "\n".join(lines)


def summary(plan: dict) -> str:
  """Lines under the table: the target, the study's estimate, what is not planned yet, what does not fit."""
  target, study = plan["target"], plan["study"]
  lines = [f"target {target['name']} ({target['topology'] or 'local devices'}): {target['num_devices']} x"
           f" {target['device_kind']} on {target['num_hosts']} host(s); planned in {plan['plan_seconds']:.0f} s"]
  if "chip_hours" in study:
    lines.append(f"planned stages of the study: {study['chip_hours']:.3g} chip-hours (classifiers"
                 f" {study['classifier_chip_hours']:.3g}, fine-tuning {study['finetune_chip_hours']:.3g}; upper bounds:"
                 f" max_epochs every run) at {100 * plan['utilization']:.0f}% of peak bf16 FLOP/s")
    lines.append("not planned yet: " + ", ".join(study["not_yet_planned"]))
  else:
    lines.append(study["note"])
  lines += [f"DOES NOT FIT: {r['stage']}" + (f" ({r['refused'].splitlines()[0]})" if r["refused"] else "")
            for r in plan["steps"] if r["fits"] is False]
  return "\n".join(lines)


def check_fits(plan: dict) -> None:
  """Raises DoesNotFit naming each stage whose per-device memory exceeds the device's HBM."""
  bad = [r for r in plan["steps"] if r["fits"] is False]
  if bad:
    raise DoesNotFit("; ".join(
        f"{r['stage']} does not fit on {plan['target']['name']}: " + (
            f"the compiler says {r['refused'].splitlines()[0]}" if r["refused"] is not None else
            f"{r['peak_gib']:.2f} GiB per device > {r['hbm_bytes'] / GIB:.2f} GiB HBM") for r in bad))


def plan_study(config: ConfigDict, target_name: str, out_dir: str | Path, *,
               utilization: float = DEFAULT_UTILIZATION, log: Callable[[str], None] = print) -> dict:
  """Compiles the study's planned hot steps for `target_name`, writes <out_dir>/plan.json (compiled
  results are cached in <out_dir>/plan_cache) and returns the plan; `table(plan["steps"])` prints it."""
  if not 0 < utilization <= 1:
    raise ValueError(f"utilization must be in (0, 1], got {utilization}")
  out_dir = Path(out_dir)
  start = time.time()
  target = resolve(target_name)
  steps = hot_steps.classifier_steps(config.classifier, _num_classes(config), target)
  for method in methods_lib.select(config, config.methods):
    if method.kind == method_kinds.FINETUNED:
      steps.append(hot_steps.finetune_step(config.method_configs[method.name], _num_classes(config), target,
                                           out_dir / "models", stage=f"finetune/{method.name}"))
  costs = {s.stage: compile_step(s, target, cache_dir=out_dir / "plan_cache", log=log) for s in steps}
  plan = {
      "target": {"name": target.name, "topology": target.topology, "num_devices": len(target.devices),
                 "num_hosts": target.num_hosts, "device_kind": target.devices[0].device_kind,
                 "devices_per_chip": target.devices_per_chip, "hbm_bytes_per_device": target.hbm_bytes(),
                 "peak_bf16_flops_per_device": target.peak_flops()},
      "utilization": utilization,
      "steps": plan_rows(costs, target, utilization),
      "study": study_hours(config, costs, target, utilization),
      "plan_seconds": time.time() - start,
  }
  plan["does_not_fit"] = [r["stage"] for r in plan["steps"] if r["fits"] is False]
  out_dir.mkdir(parents=True, exist_ok=True)
  io.atomic_write_json(out_dir / PLAN_FILE, plan)
  return plan
