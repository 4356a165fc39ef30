"""The plan of a whole study config for one target: every planned hot step compiled (jax_aug.plan.compile),
memory fit against the device's HBM, time per call at a stated utilization, and the study's chip-hours
from its stage counts. Writes plan.json; `table` and `summary` format it for the terminal.

Stage counts (per classifier run, upper bounds: every run trains to the config's max_epochs):
  baseline_10pct / baseline_20pct   n_resamples runs (seeds) on the 10% / 20% subset
  every other method                n_resamples runs on the subset + an equally large augmentation set
  methods chosen on validation      + one selection run per candidate (fine-tuned: the kept checkpoints,
  (kinds.selects_on_validation)    keep_epochs up to max_epochs + best train + best val; Boomerang: its
                                    strength grid), - 1: the chosen candidate's run is reused as resample
                                    `selection.resample`
Each epoch: ceil(train / batch) train steps and ceil(validation / eval batch) eval steps; the validation
split is as large as the subset. Fine-tuning: one run per point of the method's learning-rate grid
(`finetune.lr_search.factors`), max_epochs epochs of ceil(subset / batch) steps (its per-epoch validation
loss is not planned yet). Sampling: per DM method one augmentation set of images_per_class x classes
images (fine-tuned methods: one per candidate checkpoint; Boomerang: one per strength of its grid, each
strength's loop trip count), in batches of the method's batch_size on one host's devices. FT cluster
conditioning: Inception-v3 features of the subset and validation images; retrieval: one CLIP text query
per class. Paper-scale image counts use ILSVRC2012's 1,281,167 train images.

Multi-host targets (hosts = chips / chips per host of the topology) show each host's share: sampling
batches are dealt round robin (`sharding.host_slice`), a classifier or fine-tuning batch is split over
every device (each host loads batch / hosts examples per step), and downloads go to one host unless
img2dataset's pyspark distributor spreads them over the cluster (retrieval `download.distributor`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from ml_collections import ConfigDict

from jax_aug import io, method_kinds
from jax_aug.data import subsets
from jax_aug.diffusion import boomerang
from jax_aug.finetune import clusters
from jax_aug.plan import hot_steps
from jax_aug.plan.compile import StepCost, compile_step
from jax_aug.plan.targets import GIB, Target, resolve
from jax_aug.retrieval import clip_model
from jax_aug.study import kinds
from jax_aug.study import methods as methods_lib

PLAN_FILE = "plan.json"
# Model FLOPs utilization assumed for time estimates (a well-tuned convnet / U-Net step reaches 0.3..0.5).
DEFAULT_UTILIZATION = 0.4
ILSVRC2012_TRAIN_IMAGES = 1_281_167
ILSVRC2012_CLASSES = 1000
# The study's device work that the plan does not compile (listed in plan.json): the fine-tuning runs'
# per-epoch validation loss, the safety checker on every sampled image, the prompts' text encoding, the
# retrieval's image embeddings (aesthetic predictor) and its index search (CPU, faiss).
NOT_YET_PLANNED = (
  "finetune validation (eval_sums)",
  "safety checker",
  "prompt text encoding",
  "retrieval image embeddings (aesthetic predictor)",
)


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
      runs, train = config.n_resamples, _split_images(config, fraction)  # one per seed, as the runner trains them
    else:
      runs, train = config.n_resamples, 2 * subset
      if kinds.selects_on_validation(config, method):
        runs += _selection_candidates(config.method_configs[method.name]) - 1  # the chosen one is reused
    rows.append({"method": method.name, "runs": runs, "train_images": train, "validation_images": subset})
  return rows


def _seconds(cost: StepCost, peak: float, utilization: float, flops: float | None = None) -> float:
  return (cost.flops_per_device if flops is None else flops) / (peak * utilization)


def _is_img2img(method_config: ConfigDict) -> bool:
  return bool(method_config.get("boomerang_strength_grid")) or bool(method_config.get("boomerang_strength"))


def _strengths(method_config: ConfigDict) -> list[float]:
  """The Boomerang strengths the study samples: its grid, or the one strength."""
  return list(method_config.get("boomerang_strength_grid") or ()) or [method_config.boomerang_strength]


def sampling_stages(config: ConfigDict) -> dict[str, tuple[str, ConfigDict]]:
  """method -> (stage, the sampling config that stage compiles) for every DM method of config.methods.

  Methods that sample with the same shapes (model, dtype, batch, resolution, steps, scheduler) share one
  compiled stage, `sample/txt2img` or `sample/img2img` (Boomerang at its config's strength, else its grid's
  first); should they differ, each gets its own `sample/<method>/<mode>`."""
  chosen = {}
  for method in methods_lib.select(config, config.methods):
    if method.kind not in (method_kinds.PROMPT, method_kinds.BOOMERANG, method_kinds.FINETUNED):
      continue
    mc = config.method_configs[method.name]
    if _is_img2img(mc) and not mc.boomerang_strength:
      mc = mc.copy_and_resolve_references()
      mc.boomerang_strength = _strengths(mc)[0]
    chosen[method.name] = mc
  shape = lambda mc: (
    mc.model.path,
    mc.model.dtype,
    mc.batch_size,
    mc.resolution,
    mc.num_inference_steps,
    mc.scheduler,
    _is_img2img(mc) and mc.boomerang_strength,
  )
  stages = {}
  for img2img in (False, True):
    group = {m: mc for m, mc in chosen.items() if _is_img2img(mc) == img2img}
    mode = "img2img" if img2img else "txt2img"
    shared = len({shape(mc) for mc in group.values()}) == 1
    for m, mc in group.items():
      stages[m] = (f"sample/{mode}" if shared else f"sample/{m}/{mode}", mc)
  return stages


def _clusters_methods(config: ConfigDict) -> list[str]:
  return [
    m.name
    for m in methods_lib.select(config, config.methods)
    if m.kind == method_kinds.FINETUNED and config.method_configs[m.name].finetune.trainables.clusters_per_class > 1
  ]


def _retrieval(config: ConfigDict) -> bool:
  return any(m.kind == method_kinds.RETRIEVAL for m in methods_lib.select(config, config.methods))


def study_hours(config: ConfigDict, costs: dict[str, StepCost], target: Target, utilization: float) -> dict:
  """Chip-hours of the planned stages (classifier runs, fine-tuning runs, sampling, Inception-v3
  features, CLIP queries) from the step times at `utilization`: each call holds the chips its step runs on."""
  peak = target.peak_flops()
  if peak is None:
    return {"note": f"no peak FLOP/s known for {target.devices[0].device_kind}: no time estimate"}
  refused = [stage for stage, cost in costs.items() if cost.refused is not None]
  if refused:
    return {"note": f"no time estimate: {', '.join(refused)} cannot run on {target.name}"}
  chips = lambda cost: cost.num_devices / target.devices_per_chip
  hours = lambda cost, calls, flops=None: calls * _seconds(cost, peak, utilization, flops) * chips(cost) / 3600
  classes, subset = _num_classes(config), _split_images(config, config.data.subset_fraction)
  classifier = config.classifier
  finetune_rows, finetune_total = [], 0.0
  for method in methods_lib.select(config, config.methods):
    if method.kind != method_kinds.FINETUNED:
      continue
    ft = config.method_configs[method.name].finetune
    steps = math.ceil(subset / ft.batch_size)  # fine-tuning trains on the 10% subset
    grid = len(ft.lr_search.factors)
    run_hours = hours(costs[f"finetune/{method.name}/train"], grid * ft.policy.max_epochs * steps)
    finetune_total += run_hours
    finetune_rows.append(
      {
        "method": method.name,
        "runs": grid,
        "train_images": subset,
        "epochs_upper_bound": ft.policy.max_epochs,
        "train_steps_per_epoch": steps,
        "chip_hours": run_hours,
      }
    )
  rows, total = [], 0.0
  for run in classifier_runs(config):
    steps = math.ceil(run["train_images"] / classifier.global_batch_size)
    evals = math.ceil(run["validation_images"] / classifier.eval_batch_size)
    epochs = classifier.schedule.max_epochs
    run_hours = hours(costs["classifier/train"], run["runs"] * epochs * steps) + hours(
      costs["classifier/eval"], run["runs"] * epochs * evals
    )
    total += run_hours
    rows.append(
      {
        **run,
        "epochs_upper_bound": epochs,
        "train_steps_per_epoch": steps,
        "eval_steps_per_epoch": evals,
        "chip_hours": run_hours,
      }
    )
  sampling_rows, sampling_total = [], 0.0
  by_name = {m.name: m for m in methods_lib.select(config, config.methods)}
  for method, (stage, mc) in sampling_stages(config).items():
    cost, images = costs[stage], mc.images_per_class * classes
    batches = math.ceil(images / mc.batch_size)
    if _is_img2img(mc):
      # One set per strength; a strength's call differs from the compiled one by its loop's trip count.
      body, trips = cost.loops[0]["flops_per_device"], cost.loops[0]["trip_count"]
      entries = trips + boomerang.start_step(mc.num_inference_steps, mc.boomerang_strength)
      sets = {
        f"strength {s:g}": cost.flops_per_device
        - (trips - (entries - boomerang.start_step(mc.num_inference_steps, s))) * body
        for s in _strengths(mc)
      }
    else:
      row = by_name[method]
      candidates = (
        _selection_candidates(mc) if row.kind == method_kinds.FINETUNED and kinds.selects_on_validation(config, row) else 1
      )
      sets = {f"set {i}": cost.flops_per_device for i in range(candidates)}
    set_hours = sum(hours(cost, batches, flops) for flops in sets.values())
    sampling_total += set_hours
    sampling_rows.append(
      {
        "method": method,
        "stage": stage,
        "sets": len(sets),
        "images_per_set": images,
        "batch_size": mc.batch_size,
        "batches_per_set": batches,
        "chip_hours": set_hours,
      }
    )
  other_rows = []
  for method in _clusters_methods(config):
    block = config.method_configs[method].finetune.clusters
    calls = math.ceil(2 * subset / block.batch_size)  # subset + an equally large validation split
    stage = clusters.features_stage(block)
    other_rows.append({"stage": stage, "method": method, "calls": calls, "chip_hours": hours(costs[stage], calls)})
  if _retrieval(config):
    calls = math.ceil(_retrieval_classes(config) / clip_model.EMBED_TEXTS_BATCH)
    other_rows.append(
      {
        "stage": "retrieval/clip_text_query",
        "method": "retrieval",
        "calls": calls,
        "chip_hours": hours(costs["retrieval/clip_text_query"], calls),
      }
    )
  other_total = sum(r["chip_hours"] for r in other_rows)
  return {
    "utilization": utilization,
    "classifier_runs": rows,
    "classifier_chip_hours": total,
    "finetune_runs": finetune_rows,
    "finetune_chip_hours": finetune_total,
    "sampling_runs": sampling_rows,
    "sampling_chip_hours": sampling_total,
    "feature_runs": other_rows,
    "feature_chip_hours": other_total,
    "chip_hours": total + finetune_total + sampling_total + other_total,
    "not_yet_planned": list(NOT_YET_PLANNED),
  }


def _retrieval_classes(config: ConfigDict) -> int:
  classes = config.method_configs["retrieval"].classes
  return ILSVRC2012_CLASSES if classes is None else len(classes)


def per_host_work(config: ConfigDict, num_hosts: int) -> dict:
  """Each host's share of the study's data work on `num_hosts` hosts (round-robin upper bounds: the
  busiest host)."""
  classes, subset = _num_classes(config), _split_images(config, config.data.subset_fraction)
  work = {"hosts": num_hosts, "sampling": [], "finetune": [], "classifier": {}, "downloads": None}
  for method, (_stage, mc) in sampling_stages(config).items():
    batches = math.ceil(mc.images_per_class * classes / mc.batch_size)
    per_host = math.ceil(batches / num_hosts)
    work["sampling"].append(
      {
        "method": method,
        "batches_per_set": batches,
        "batches_per_host": per_host,
        "images_per_host": per_host * mc.batch_size,
      }
    )
  for method in methods_lib.select(config, config.methods):
    if method.kind == method_kinds.FINETUNED:
      ft = config.method_configs[method.name].finetune
      # One model of every class; each step's global batch is split over all devices of all hosts.
      work["finetune"].append(
        {
          "method": method.name,
          "classes_per_host": classes,
          "steps_per_epoch_per_host": math.ceil(subset / ft.batch_size),
          "examples_per_step_per_host": ft.batch_size / num_hosts,
        }
      )
  work["classifier"] = {"examples_per_train_step_per_host": config.classifier.global_batch_size / num_hosts}
  if _retrieval(config):
    rc = config.method_configs["retrieval"]
    n = _retrieval_classes(config)
    most = n * round(rc.max_multiple * rc.k_factor * rc.images_per_class)
    spread = rc.download.distributor == "pyspark"
    work["downloads"] = {
      "distributor": rc.download.distributor,
      "candidates_at_least": n * rc.images_per_class,
      "candidates_at_most": most,
      "candidates_at_most_per_host": math.ceil(most / num_hosts) if spread else most,
    }
  return work


def plan_rows(costs: dict[str, StepCost], target: Target, utilization: float) -> list[dict]:
  hbm, peak = target.hbm_bytes(), target.peak_flops()
  rows = []
  for cost in costs.values():
    rows.append(
      {
        **cost.to_json(),
        "hbm_bytes": hbm,
        "fits": None if hbm is None else cost.fits(hbm),
        "seconds_per_call": None if peak is None else cost.seconds(peak, utilization),
      }
    )
  return rows


def table(rows: list[dict]) -> str:
  """The terminal table: one line per stage (memory per device in GiB, 3 significant digits)."""
  width = max([len("stage")] + [len(r["stage"]) for r in rows])
  unit_width = max([len("per call")] + [len(r["unit"]) for r in rows])
  header = (
    f"{'stage':<{width}} {'per call':<{unit_width}} {'dev':>4} {'args':>9} {'temp':>9} {'out':>9}"
    f" {'aliased':>9} {'total GiB':>9} {'HBM GiB':>8}  {'fits':<13} {'FLOP/device':>11} {'s/call':>9}"
  )
  lines = [header, "-" * len(header)]
  for r in rows:
    hbm = "?" if r["hbm_bytes"] is None else f"{r['hbm_bytes'] / GIB:.1f}"
    fits = "cannot run" if r["cannot_run"] else "unknown" if r["fits"] is None else "fits" if r["fits"] else "does not fit"
    seconds = "?" if r["seconds_per_call"] is None else f"{r['seconds_per_call']:.3g}"
    start = f"{r['stage']:<{width}} {r['unit']:<{unit_width}} {r['num_devices'] or '-':>4}"
    if r["refused"] is not None:
      why = "(the config cannot run there, see below)" if r["cannot_run"] else "(the TPU compiler refused it, see below)"
      lines.append(f"{start} {why:>49} {hbm:>8}  {fits:<13}")
      continue
    gib = [f"{r[k] / GIB:>9.3g}" for k in ("argument_bytes", "temp_bytes", "output_bytes", "alias_bytes")]
    lines.append(
      f"{start} {' '.join(gib)} {r['peak_gib']:>9.3g} {hbm:>8}  {fits:<13} {r['flops_per_device']:>11.3g} {seconds:>9}"
    )
  return "\n".join(lines)


def summary(plan: dict) -> str:
  """Lines under the table: the target, the study's estimate, each host's share, what is not planned,
  what does not fit or cannot run."""
  target, study = plan["target"], plan["study"]
  lines = [
    f"target {target['name']} ({target['topology'] or 'local devices'}): {target['num_devices']} x"
    f" {target['device_kind']} on {target['num_hosts']} host(s); planned in {plan['plan_seconds']:.0f} s"
  ]
  if "chip_hours" in study:
    lines.append(
      f"planned stages of the study: {study['chip_hours']:.4g} chip-hours (classifiers"
      f" {study['classifier_chip_hours']:.4g}, fine-tuning {study['finetune_chip_hours']:.4g}, sampling"
      f" {study['sampling_chip_hours']:.4g}, features and queries {study['feature_chip_hours']:.3g}; upper"
      f" bounds: max_epochs every run) at {100 * plan['utilization']:.0f}% of peak bf16 FLOP/s"
    )
    lines.append("not planned: " + ", ".join(study["not_yet_planned"]))
  else:
    lines.append(study["note"])
  work = plan["per_host"]
  if work["hosts"] > 1:
    lines.append(f"per host ({work['hosts']} hosts):")
    if work["classifier"] is not None:
      lines.append(f"  classifier: {work['classifier']['examples_per_train_step_per_host']:g} examples per train step")
    lines += [
      f"  sample {w['method']}: {w['images_per_host']} images ({w['batches_per_host']} batches) per host per set"
      for w in work["sampling"]
    ]
    lines += [
      f"  finetune {w['method']}: all {w['classes_per_host']} classes, {w['steps_per_epoch_per_host']} steps per"
      f" epoch of {w['examples_per_step_per_host']:g} examples per host"
      for w in work["finetune"]
    ]
    if work["downloads"] is not None:
      d = work["downloads"]
      lines.append(
        f"  downloads ({d['distributor']}): at most {d['candidates_at_most_per_host']} candidates per host"
        f" (of {d['candidates_at_least']}..{d['candidates_at_most']})"
      )
  lines += [
    f"{'CANNOT RUN' if r['cannot_run'] else 'DOES NOT FIT'}: {r['stage']}"
    + (f" ({r['refused'].splitlines()[0]})" if r["refused"] else "")
    for r in plan["steps"]
    if r["fits"] is False
  ]
  return "\n".join(lines)


def check_fits(plan: dict) -> None:
  """Raises DoesNotFit naming each stage whose per-device memory exceeds the device's HBM, or that the
  production code refuses to run on the target (e.g. a batch its devices cannot split)."""
  bad = [r for r in plan["steps"] if r["fits"] is False]
  if bad:
    raise DoesNotFit(
      "; ".join(
        f"{r['stage']} cannot run on {plan['target']['name']}: {r['refused']}"
        if r["cannot_run"]
        else f"{r['stage']} does not fit on {plan['target']['name']}: "
        + (
          f"the compiler says {r['refused'].splitlines()[0]}"
          if r["refused"] is not None
          else f"{r['peak_gib']:.2f} GiB per device > {r['hbm_bytes'] / GIB:.2f} GiB HBM"
        )
        for r in bad
      )
    )


def _collector(target: Target, only_stage: str | None = None) -> tuple[list, Callable]:
  """A list of hot steps and its `add(stages, build)`: a `cannot_run` StepCost in place of each stage whose
  production code refuses the config on this target (`build` raises ValueError, e.g. a batch the devices
  cannot split). With `only_stage`, only the `build` that makes that stage runs (a compile process's case:
  building the others' models would cost it seconds to minutes for nothing)."""
  steps = []

  def add(stages: list[str], build: Callable[[], list]) -> None:
    if only_stage is not None and only_stage not in stages:
      return
    try:
      steps.extend(build())
    except ValueError as e:
      steps.extend(StepCost.refusal(stage, target.name, str(e), cannot_run=True) for stage in stages)

  return steps, add


def _hot_steps(config: ConfigDict, target: Target, only_stage: str | None = None) -> list:
  """The study's hot steps in order (see `_collector` for stages that cannot run and `only_stage`)."""
  steps, add = _collector(target, only_stage)

  classes = _num_classes(config)
  add(["classifier/train", "classifier/eval"], lambda: hot_steps.classifier_steps(config.classifier, classes, target))
  for stage, mc in dict(sampling_stages(config).values()).items():
    add([stage], lambda st=stage, mc=mc: [hot_steps.sampling_step(mc, target, stage=st)])
  clustered = _clusters_methods(config)
  if clustered:
    block = config.method_configs[clustered[0]].finetune.clusters
    add([clusters.features_stage(block)], lambda: [hot_steps.cluster_features_step(block, target)])
  if _retrieval(config):
    add(["retrieval/clip_text_query"], lambda: [hot_steps.clip_text_step(config.method_configs["retrieval"], target)])
  # Last: the fine-tuning steps are the biggest compiles (minutes each at SD v1.4 size on a CPU).
  for method in methods_lib.select(config, config.methods):
    if method.kind == method_kinds.FINETUNED:
      stage = f"finetune/{method.name}"
      add(
        [f"{stage}/train"],
        lambda m=method.name, st=stage: [hot_steps.finetune_step(config.method_configs[m], classes, target, stage=st)],
      )
  return steps


def _finish(
  target: Target, costs: dict[str, StepCost], utilization: float, study: dict, per_host: dict, start: float, out_dir: Path
) -> dict:
  plan = {
    "target": {
      "name": target.name,
      "topology": target.topology,
      "num_devices": len(target.devices),
      "num_hosts": target.num_hosts,
      "device_kind": target.devices[0].device_kind,
      "devices_per_chip": target.devices_per_chip,
      "hbm_bytes_per_device": target.hbm_bytes(),
      "peak_bf16_flops_per_device": target.peak_flops(),
    },
    "utilization": utilization,
    "steps": plan_rows(costs, target, utilization),
    "study": study,
    "per_host": per_host,
    "plan_seconds": time.time() - start,
  }
  plan["does_not_fit"] = [r["stage"] for r in plan["steps"] if r["fits"] is False and not r["cannot_run"]]
  plan["cannot_run"] = [r["stage"] for r in plan["steps"] if r["cannot_run"]]
  out_dir.mkdir(parents=True, exist_ok=True)
  io.atomic_write_json(out_dir / PLAN_FILE, plan)
  return plan


def _compile_all(
  steps: list, target: Target, out_dir: Path, log: Callable[[str], None], compile_in_child: Callable[[str], None] | None
) -> dict[str, StepCost]:
  cache_dir = out_dir / "plan_cache"
  return {
    s.stage: s
    if isinstance(s, StepCost)
    else compile_step(s, target, cache_dir=cache_dir, log=log, compile_in_child=compile_in_child)
    for s in steps
  }


def compile_one_stage(steps: list, stage: str, target: Target, out_dir: Path, log: Callable[[str], None]) -> None:
  """What a `compile_in_child` process does: compiles `stage`'s step into the plan cache (nothing else)."""
  chosen = [s for s in steps if s.stage == stage]
  if not chosen:
    raise ValueError(
      f"no hot step named {stage!r} in this plan (--plan_stage is set by a --plan run, to one of the stages it lists)"
    )
  _compile_all(chosen, target, out_dir, log, None)


def _check_utilization(utilization: float) -> None:
  if not 0 < utilization <= 1:
    raise ValueError(f"utilization must be in (0, 1], got {utilization}")


def plan_study(
  config: ConfigDict,
  target_name: str,
  out_dir: str | Path,
  *,
  utilization: float = DEFAULT_UTILIZATION,
  log: Callable[[str], None] = print,
  compile_in_child: Callable[[str], None] | None = None,
  only_stage: str | None = None,
) -> dict | None:
  """Compiles the study's hot steps for `target_name`, writes <out_dir>/plan.json (compiled results are
  cached in <out_dir>/plan_cache) and returns the plan; `table(plan["steps"])` prints it.

  `compile_in_child(stage)`: compiles each step not yet cached in a fresh process (see `compile_step`),
  which calls this with `only_stage=stage`: that step alone into the cache, no plan (returns None)."""
  _check_utilization(utilization)
  out_dir, start = Path(out_dir), time.time()
  target = resolve(target_name)
  steps = _hot_steps(config, target, only_stage)
  if only_stage is not None:
    return compile_one_stage(steps, only_stage, target, out_dir, log)
  costs = _compile_all(steps, target, out_dir, log, compile_in_child)
  return _finish(
    target,
    costs,
    utilization,
    study_hours(config, costs, target, utilization),
    per_host_work(config, target.num_hosts),
    start,
    out_dir,
  )


SCRIPTS = ("classifier", "finetune", "sample", "retrieval")


def plan_script(
  script: str,
  config: ConfigDict,
  target_name: str,
  out_dir: str | Path,
  *,
  utilization: float = DEFAULT_UTILIZATION,
  log: Callable[[str], None] = print,
  compile_in_child: Callable[[str], None] | None = None,
  only_stage: str | None = None,
) -> dict | None:
  """The plan of one entry script's config: train_classifier.py ("classifier": a classifier / method
  config), finetune_dm.py ("finetune": its train step, + Inception-v3 features for cluster methods),
  sample.py ("sample": txt2img, or img2img for Boomerang) or retrieve.py ("retrieval": the CLIP query).
  `compile_in_child`, `only_stage`: as in `plan_study`."""
  if script not in SCRIPTS:
    raise ValueError(f"unknown script {script!r}: expected one of {SCRIPTS}")
  _check_utilization(utilization)
  out_dir, start = Path(out_dir), time.time()
  target = resolve(target_name)
  steps, add = _collector(target, only_stage)
  per_host = {"hosts": target.num_hosts, "sampling": [], "finetune": [], "classifier": None, "downloads": None}
  if script == "classifier":
    add(["classifier/train", "classifier/eval"], lambda: hot_steps.classifier_steps(config, _num_classes(config), target))
  elif script == "finetune":
    stage = f"finetune/{config.method.name}"
    add([f"{stage}/train"], lambda: [hot_steps.finetune_step(config, _num_classes(config), target, stage=stage)])
    if config.finetune.trainables.clusters_per_class > 1:
      block = config.finetune.clusters
      add([clusters.features_stage(block)], lambda: [hot_steps.cluster_features_step(block, target)])
  elif script == "sample":
    stage = "sample/img2img" if config.boomerang_strength else "sample/txt2img"
    add([stage], lambda: [hot_steps.sampling_step(config, target, stage=stage)])
  else:
    add(["retrieval/clip_text_query"], lambda: [hot_steps.clip_text_step(config, target)])
  if only_stage is not None:
    return compile_one_stage(steps, only_stage, target, out_dir, log)
  costs = _compile_all(steps, target, out_dir, log, compile_in_child)
  return _finish(
    target,
    costs,
    utilization,
    {"note": f"{script} script: per-call figures only (the study's totals: run_study.py --plan)"},
    per_host,
    start,
    out_dir,
  )
