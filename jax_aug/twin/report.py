"""The comparison of a classifier run with its PyTorch twin: twin_report.md + twin_report.png.

Reads the two run directories (metrics.jsonl, step_losses.jsonl, results.json, written in one format by
jax_aug.classifier.train and jax_aug.twin.classifier); `compare` is pure, `make_figure` draws, and
`write_report` writes both files atomically. Imports no torch (a report can be redrawn anywhere).
"""

from __future__ import annotations

import io as _bytes_io
import os
from pathlib import Path

from matplotlib.figure import Figure

from jax_aug import io
from jax_aug.classifier import train

REPORT_FILE = "twin_report.md"
FIGURE_FILE = "twin_report.png"
# The first steps' losses of the two frameworks agree to this relative difference on one device in
# float32 (tests/test_twin_classifier.py); the report says where the runs leave it.
LOSS_RTOL = 1e-4


def load_run(run_dir: str | os.PathLike) -> dict:
  """{"epochs": metrics.jsonl rows, "steps": step_losses.jsonl rows, "results": results.json} of a run."""
  run_dir = Path(run_dir)
  for name in (train.METRICS_FILE, train.STEP_LOSSES_FILE, train.RESULTS_FILE):
    if not (run_dir / name).exists():
      raise FileNotFoundError(f"{run_dir / name} is missing: is {run_dir} a finished classifier (or twin) run?")
  return {
    "epochs": io.JsonlManifest(run_dir / train.METRICS_FILE).read(),
    "steps": io.JsonlManifest(run_dir / train.STEP_LOSSES_FILE).read(),
    "results": io.read_json(run_dir / train.RESULTS_FILE),
  }


def _step_differences(ours: list[dict], twin: list[dict], field: str, rtol: float) -> tuple[list, list, int]:
  """Steps logged by both, |ours - twin| / |twin| of `field` at each, and how many leading steps are
  within `rtol`."""
  twin_values = {r["step"]: r[field] for r in twin}
  our_values = {r["step"]: r[field] for r in ours}
  steps = sorted(s for s in our_values if s in twin_values)
  relative = [abs(our_values[s] - twin_values[s]) / max(abs(twin_values[s]), 1e-12) for s in steps]
  return steps, relative, next((i for i, d in enumerate(relative) if d > rtol), len(relative))


def _save_png(figure: Figure, path: Path) -> None:
  buffer = _bytes_io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100)
  io.atomic_write_bytes(path, buffer.getvalue())


def _readable_ylim(ax, min_relative_span: float = 0.02) -> None:
  """Near-identical curves would make matplotlib zoom into float32 rounding (a 1e-9 axis offset that
  looks like a gap); show at least +-1% around them instead."""
  low, high = ax.get_ylim()
  middle = (low + high) / 2
  if high - low < min_relative_span * abs(middle):
    ax.set_ylim(middle - min_relative_span / 2 * abs(middle), middle + min_relative_span / 2 * abs(middle))


def _plot_step_difference(ax, comparison: dict) -> None:
  # Exact agreement (0) has no logarithm: drawn at the floor of the axis.
  ax.plot(
    comparison["steps"], [max(d, 1e-9) for d in comparison["step_relative_difference"]], "-o", label="|ours - twin| / |twin|"
  )
  ax.axhline(comparison["loss_rtol"], color="gray", linestyle=":", label=f"{comparison['loss_rtol']:g}")
  ax.set_yscale("log")
  ax.set_title("train loss, relative difference per step")
  ax.set_xlabel("step")
  ax.legend()


def compare(ours: dict, twin: dict, *, loss_rtol: float = LOSS_RTOL) -> dict:
  """Where the two runs agree: per-step loss differences, per-epoch validation differences, final top-1."""
  steps, step_rel, leading = _step_differences(ours["steps"], twin["steps"], "loss", loss_rtol)
  twin_epochs = {r["epoch"]: r for r in twin["epochs"]}
  epochs = [r["epoch"] for r in ours["epochs"] if r["epoch"] in twin_epochs]
  our_epochs = {r["epoch"]: r for r in ours["epochs"]}
  val_diff = [our_epochs[e]["validation_top1"] - twin_epochs[e]["validation_top1"] for e in epochs]
  lr_same = all(our_epochs[e]["learning_rate"] == twin_epochs[e]["learning_rate"] for e in epochs)
  return {
    "steps": steps,
    "step_relative_difference": step_rel,
    "loss_rtol": loss_rtol,
    "steps_within_rtol": leading,
    "first_step_beyond_rtol": steps[leading] if leading < len(steps) else None,
    "epochs": epochs,
    "validation_difference": val_diff,
    "max_abs_validation_difference": max((abs(d) for d in val_diff), default=0.0),
    "first_epoch_validation_differs": next((e for e, d in zip(epochs, val_diff) if d != 0), None),
    "same_learning_rates": lr_same,
    "top1": {"ours": ours["results"]["top1"], "twin": twin["results"]["top1"]},
    "best_epoch": {"ours": ours["results"]["best_epoch"], "twin": twin["results"]["best_epoch"]},
    "eval_split": ours["results"]["eval_split"],
  }


def divergence_statement(comparison: dict, config) -> str:
  """Where the runs part and the reasons that apply to this configuration."""
  c = comparison
  lines = []
  if c["steps"]:
    worst = max(c["step_relative_difference"][: c["steps_within_rtol"]] or [0.0])
    if c["first_step_beyond_rtol"] is None:
      lines.append(f"All {len(c['steps'])} logged steps agree within {c['loss_rtol']:g} relative (largest {worst:.2g}).")
    else:
      lines.append(
        f"The first {c['steps_within_rtol']} steps agree within {c['loss_rtol']:g} relative (largest {worst:.2g});"
        f" from step {c['first_step_beyond_rtol']} on the losses differ by more"
        f" ({c['step_relative_difference'][c['steps_within_rtol']]:.2g} there)."
      )
  if c["first_epoch_validation_differs"] is None:
    lines.append(f"Validation top-1 is identical in all {len(c['epochs'])} epochs.")
  else:
    lines.append(
      f"Validation top-1 first differs after epoch {c['first_epoch_validation_differs']}; the largest"
      f" difference over {len(c['epochs'])} epochs is {c['max_abs_validation_difference']:.2f} points."
    )
  if not c["same_learning_rates"]:
    lines.append(
      "The plateau schedule divided the learning rate at different epochs, because the validation"
      " curves differ; from there on the runs follow different schedules."
    )
  lines.append("")
  lines.append("Why they part (the inputs, initial weights, recipe and schedule are identical by construction):")
  lines.append(
    "- **Float reduction order.** XLA and PyTorch (oneDNN on CPU, cuDNN on GPU) sum convolutions,"
    " BatchNorm statistics and gradients in different orders, so results differ in the last bits"
    " (~1e-7 relative in float32). Training is chaotic: SGD amplifies such differences from step to"
    " step, so per-step agreement holds for the first steps only, and later the runs are two samples"
    " of the same training distribution: their final accuracies should differ like two seeds' do,"
    " not systematically."
  )
  lines.append(
    "- **Random-init ResNet-50 gradients are ill-conditioned in float32**: near-constant BatchNorm"
    " channels amplify rounding (PyTorch's own float32 gradients differ from its float64 ones by"
    " 20-40% on some tensors: tests/test_classifier_torch_equivalence.py), which shortens the"
    " step-for-step phase at paper scale compared with the tiny network."
  )
  lines.append(
    "- **BatchNorm statistics.** Ours are over the global batch whatever the device count; the twin"
    " runs in one process, so it normalises over the same global batch. The paper's PyTorch runs"
    " (DDP on 8 GPUs) normalised per GPU (32 images); neither run here emulates that."
  )
  if config.model.dtype == "bfloat16":
    lines.append(
      "- **bfloat16.** Ours computes every layer in bfloat16 with float32 parameters and float32 BN"
      " statistics; the twin uses torch.autocast, which keeps BatchNorm and some reductions in"
      " float32: the two round differently from the first step (expect loss differences of the"
      " order of bfloat16's rounding, 2^-8 = 4e-3 relative, at once)."
    )
  else:
    lines.append(
      "- **Precision.** Both compute in float32 here. On Ampere+ GPUs both frameworks may use TF32"
      " for convolutions by default, which rounds to 10-bit mantissas: see docs/twin.md."
    )
  return "\n".join(lines)


def make_figure(ours: dict, twin: dict, comparison: dict) -> Figure:
  """Train loss, validation top-1 and learning rate per epoch of both runs, and the relative loss
  difference of the first steps. Line labels are "ours (JAX)" and "twin (PyTorch)"."""
  figure = Figure(figsize=(11, 8), layout="constrained")
  axes = figure.subplots(2, 2)
  for run, label, style in ((ours, "ours (JAX)", "-o"), (twin, "twin (PyTorch)", "--x")):
    epochs = [r["epoch"] for r in run["epochs"]]
    axes[0, 0].plot(epochs, [r["train_loss"] for r in run["epochs"]], style, label=label)
    axes[0, 1].plot(epochs, [r["validation_top1"] for r in run["epochs"]], style, label=label)
    axes[1, 0].plot(epochs, [r["learning_rate"] for r in run["epochs"]], style, label=label)
  for ax, title in (
    (axes[0, 0], "train loss (epoch mean)"),
    (axes[0, 1], "validation top-1 (%)"),
    (axes[1, 0], "learning rate"),
  ):
    if ax is not axes[1, 0]:  # the lr axis is logarithmic
      _readable_ylim(ax)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.legend()
  axes[1, 0].set_yscale("log")
  _plot_step_difference(axes[1, 1], comparison)
  top1 = comparison["top1"]
  figure.suptitle(f"final {comparison['eval_split']} top-1: ours {top1['ours']:.2f}%, twin {top1['twin']:.2f}%")
  return figure


def _table(ours: dict, twin: dict) -> str:
  twin_epochs = {r["epoch"]: r for r in twin["epochs"]}
  lines = ["| epoch | lr (ours / twin) | train loss (ours / twin) | validation top-1 % (ours / twin) |", "|---|---|---|---|"]
  for r in ours["epochs"]:
    t = twin_epochs.get(r["epoch"])
    if t is None:
      continue
    lines.append(
      f"| {r['epoch']} | {r['learning_rate']:g} / {t['learning_rate']:g} | {r['train_loss']:.6f} /"
      f" {t['train_loss']:.6f} | {r['validation_top1']:.2f} / {t['validation_top1']:.2f} |"
    )
  return "\n".join(lines)


def write_report(ours_dir: str | os.PathLike, twin_dir: str | os.PathLike, out_dir: str | os.PathLike, config) -> Path:
  """twin_report.md and twin_report.png in `out_dir`; returns the markdown's path."""
  ours, twin = load_run(ours_dir), load_run(twin_dir)
  comparison = compare(ours, twin)
  out_dir = Path(out_dir)
  _save_png(make_figure(ours, twin, comparison), out_dir / FIGURE_FILE)
  top1, best = comparison["top1"], comparison["best_epoch"]
  step_lines = "\n".join(f"| {s} | {d:.3g} |" for s, d in zip(comparison["steps"], comparison["step_relative_difference"]))
  text = f"""# Classifier run vs its PyTorch twin

Ours: `{Path(ours_dir).resolve()}` (JAX/Flax). Twin: `{Path(twin_dir).resolve()}`
({twin['results'].get('framework', 'PyTorch')}). Same initial weights, batches (images, order, crops,
flips), SGD recipe, weight-decay mask and plateau schedule; only the framework differs.

![both runs]({FIGURE_FILE})

## Final {comparison['eval_split']} top-1 (best-validation checkpoint)

| run | top-1 % | best epoch | epochs trained |
|---|---|---|---|
| ours (JAX) | {top1['ours']:.2f} | {best['ours']} | {ours['results']['epochs_trained']} |
| twin (PyTorch) | {top1['twin']:.2f} | {best['twin']} | {twin['results']['epochs_trained']} |

## Where and why they diverge

{divergence_statement(comparison, config)}

## Per epoch

{_table(ours, twin)}

## First steps: train loss, relative difference |ours - twin| / |twin|

| step | relative difference |
|---|---|
{step_lines}
"""
  io.atomic_write_text(out_dir / REPORT_FILE, text)
  return out_dir / REPORT_FILE


# --- fine-tuning (textual inversion) -----------------------------------------------------------------------


def load_finetune_metrics(run_dir: str | os.PathLike) -> dict:
  """{"steps": [{"step", "train_loss"}...], "epochs": [{"epoch", "epoch_train_loss", "val_loss"}...]} of a
  fine-tuning run's (or its twin's) metrics.jsonl."""
  from jax_aug.finetune.trainer import METRICS_FILE  # pylint: disable=g-import-not-at-top

  path = Path(run_dir) / METRICS_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing: is {run_dir} a fine-tuning run (or its twin)?")
  rows = io.JsonlManifest(path).read()
  return {"steps": [r for r in rows if "train_loss" in r], "epochs": [r for r in rows if "val_loss" in r]}


def compare_finetune(ours: dict, twin: dict, *, loss_rtol: float = LOSS_RTOL) -> dict:
  steps, step_rel, leading = _step_differences(ours["steps"], twin["steps"], "train_loss", loss_rtol)
  twin_val = {r["epoch"]: r["val_loss"] for r in twin["epochs"]}
  val_rel = [
    abs(r["val_loss"] - twin_val[r["epoch"]]) / max(abs(twin_val[r["epoch"]]), 1e-12)
    for r in ours["epochs"]
    if r["epoch"] in twin_val
  ]
  return {
    "steps": steps,
    "step_relative_difference": step_rel,
    "loss_rtol": loss_rtol,
    "steps_within_rtol": leading,
    "validation_relative_difference": val_rel,
  }


def make_finetune_figure(ours: dict, twin: dict, comparison: dict) -> Figure:
  """Train loss per step and validation loss per epoch of both runs, and the per-step relative difference."""
  figure = Figure(figsize=(14, 4.5), layout="constrained")
  axes = figure.subplots(1, 3)
  for run, label, style in ((ours, "ours (JAX)", "-o"), (twin, "twin (PyTorch)", "--x")):
    axes[0].plot([r["step"] for r in run["steps"]], [r["train_loss"] for r in run["steps"]], style, label=label)
    axes[1].plot([r["epoch"] for r in run["epochs"]], [r["val_loss"] for r in run["epochs"]], style, label=label)
  for ax, title, x in ((axes[0], "train loss", "step"), (axes[1], "validation loss", "epoch")):
    _readable_ylim(ax)
    ax.set_title(title)
    ax.set_xlabel(x)
    ax.legend()
  _plot_step_difference(axes[2], comparison)
  figure.suptitle("textual inversion: our fine-tuning trainer vs a PyTorch loop over diffusers' models")
  return figure


def write_finetune_report(ours_dir: str | os.PathLike, twin_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
  """twin_report.md and twin_report.png of a fine-tuning run and its twin, in `out_dir`."""
  ours, twin = load_finetune_metrics(ours_dir), load_finetune_metrics(twin_dir)
  comparison = compare_finetune(ours, twin)
  out_dir = Path(out_dir)
  _save_png(make_finetune_figure(ours, twin, comparison), out_dir / FIGURE_FILE)
  c = comparison
  worst = max(c["step_relative_difference"], default=0.0)
  if c["steps_within_rtol"] == len(c["steps"]):
    where = f"All {len(c['steps'])} steps agree within {c['loss_rtol']:g} relative (largest {worst:.2g})."
  else:
    where = (
      f"The first {c['steps_within_rtol']} steps agree within {c['loss_rtol']:g} relative; step"
      f" {c['steps'][c['steps_within_rtol']]} is the first beyond (largest difference {worst:.2g})."
    )
  twin_epochs = {r["epoch"]: r for r in twin["epochs"]}
  table = "\n".join(
    f"| {r['epoch']} | {r['epoch_train_loss']:.6f} / {twin_epochs[r['epoch']]['epoch_train_loss']:.6f} |"
    f" {r['val_loss']:.6f} / {twin_epochs[r['epoch']]['val_loss']:.6f} |"
    for r in ours["epochs"]
    if r["epoch"] in twin_epochs
  )
  text = f"""# Textual inversion: our trainer vs its PyTorch twin

Ours: `{Path(ours_dir).resolve()}` (JAX/Flax, diffusers' Flax models). Twin: `{Path(twin_dir).resolve()}`
(diffusers' `AutoencoderKL`, `UNet2DConditionModel`, `DDPMScheduler.add_noise`, transformers' `CLIPTextModel`,
torch AdamW). Same weights, batches, prompts, noise and timesteps; only the framework differs.

![both runs]({FIGURE_FILE})

## Where and why they diverge

{where} Validation losses differ by at most {max(c['validation_relative_difference'], default=0.0):.2g}
relative. Only the pseudo-word rows train, through a frozen text encoder and U-Net, so the optimisation is
far better conditioned than a classifier's from scratch: differences stay at float32 rounding (XLA vs
PyTorch reduction order, diffusers' PT->Flax weight conversion) for many steps. They grow where AdamW's
normalised first steps amplify tiny gradient differences. Both runs are float32 (the twin refuses
`model.dtype="bfloat16"`, whose rounding would dominate every other difference).

## Per epoch

| epoch | mean train loss (ours / twin) | validation loss (ours / twin) |
|---|---|---|
{table}
"""
  io.atomic_write_text(out_dir / REPORT_FILE, text)
  return out_dir / REPORT_FILE
