"""The study's report: Table 1 (Markdown + CSV), every run's numbers (JSON), Figure 5 grids, Figure 6
histogram and the excluded classes, all written atomically into `<workdir>/report/`.

Inputs are plain run records, one per trained classifier:

  {"method": str, "resample": int, "top1": float, "per_class_top1": {wnid: float}, ...}

with accuracies in percent. Table arithmetic lives in `statistics.py`; this module formats and draws.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jax_aug.io import atomic_write_bytes, atomic_write_json, atomic_write_text, load_image_file  # noqa: E402
from jax_aug.study import methods as methods_lib  # noqa: E402
from jax_aug.study import statistics  # noqa: E402

TABLE_CAPTION = (
    "Table 1: top-1 accuracy (%) of the downstream classifier on {eval_split}, mean ± standard"
    " error of the mean over n classifiers, one per resampled augmentation set (SE = std / sqrt(n), ddof=1;"
    " for the baselines the n runs differ only in their training seed).")
TINY_NOTICE = (
    "**This run used tiny random-init models and a synthetic ImageNet.** Its numbers test the machinery"
    " (every stage ran, the statistics are computed right), not the science: they say nothing about"
    " diffusion models vs. retrieval.")


def table1_rows(runs: Sequence[Mapping]) -> list[dict]:
  """One row per method present in `runs`, in Table 1 order: method, display, family, mean, SE, n."""
  by_method: dict[str, list[Mapping]] = {}
  for run in runs:
    if run["method"] not in methods_lib.BY_NAME:
      raise ValueError(f"run record names unknown method {run['method']!r}")
    by_method.setdefault(run["method"], []).append(run)
  rows = []
  for method in methods_lib.METHODS:
    if method.name not in by_method:
      continue
    method_runs = sorted(by_method[method.name], key=lambda r: r["resample"])
    resamples = [r["resample"] for r in method_runs]
    if len(set(resamples)) != len(resamples):
      raise ValueError(f"method {method.name}: resample indices repeat in the run records: {resamples}")
    mean, se = statistics.mean_and_standard_error([r["top1"] for r in method_runs])
    rows.append({"method": method.name, "display": method.display, "family": method.family,
                 "top1_mean": mean, "top1_standard_error": se, "n": len(method_runs)})
  return rows


def best_dm_method(rows: Sequence[Mapping]) -> str | None:
  """The diffusion-model method with the highest mean top-1 (Figure 6 compares it with retrieval)."""
  dm = [r for r in rows if r["family"] in methods_lib.DM_FAMILIES]
  return max(dm, key=lambda r: r["top1_mean"])["method"] if dm else None


def _format_mean_se(mean: float, se: float) -> str:
  return f"{mean:.2f} ± {se:.2f}" if math.isfinite(se) else f"{mean:.2f} ± n/a (n=1)"


def table1_markdown(rows: Sequence[Mapping], eval_split: str) -> str:
  lines = ["| Method | Family | Top-1 (%) | n |", "|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['display']} | {r['family']} | {_format_mean_se(r['top1_mean'], r['top1_standard_error'])}"
                 f" | {r['n']} |")
  return "\n".join(lines) + "\n\n" + TABLE_CAPTION.format(eval_split=eval_split) + "\n"


def table1_csv(rows: Sequence[Mapping]) -> str:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["method", "display", "family", "top1_mean", "top1_standard_error", "n"])
  for r in rows:
    writer.writerow([r["method"], r["display"], r["family"], repr(r["top1_mean"]),
                     repr(r["top1_standard_error"]), r["n"]])
  return buffer.getvalue()


def _png(figure) -> bytes:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100)
  plt.close(figure)
  return buffer.getvalue()


def figure5_grid(title: str, rows: Sequence[tuple[str, Sequence[str | os.PathLike]]], thumb: int = 96) -> bytes:
  """A Figure 5-style grid: one row per class (label, image paths), images as square thumbnails."""
  if not rows:
    raise ValueError(f"figure 5 grid {title!r}: no classes to show")
  columns = max(len(paths) for _, paths in rows)
  if columns == 0:
    raise ValueError(f"figure 5 grid {title!r}: no images to show")
  figure, axes = plt.subplots(len(rows), columns, figsize=(1.2 * columns + 1.6, 1.2 * len(rows) + 0.5),
                              squeeze=False)
  for i, (label, paths) in enumerate(rows):
    for j in range(columns):
      ax = axes[i][j]
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_visible(False)
      if j < len(paths):
        image = load_image_file(paths[j]).resize((thumb, thumb), Image.Resampling.BICUBIC)
        ax.imshow(np.asarray(image))
      if j == 0:
        ax.set_ylabel(label[:28], fontsize=7, rotation=0, ha="right", va="center")
  figure.suptitle(title, fontsize=9)
  figure.tight_layout()
  return _png(figure)


def figure6_histogram(improvements: Mapping[str, Mapping[str, float]]) -> bytes:
  """Figure 6: histogram of per-class top-1 improvement over the 10% baseline, one series per method."""
  values = [v for series in improvements.values() for v in series.values()]
  if not values:
    raise ValueError("figure 6: no per-class improvements to draw")
  low, high = min(values), max(values)
  if low == high:
    low, high = low - 1.0, high + 1.0
  bins = np.linspace(low, high, 21)
  figure, ax = plt.subplots(figsize=(6, 3.5))
  for label, series in improvements.items():
    ax.hist(list(series.values()), bins=bins, alpha=0.55, label=f"{label} (mean {np.mean(list(series.values())):+.2f})")
  ax.axvline(0.0, color="black", linewidth=0.8)
  ax.set_xlabel("per-class top-1 improvement over 10% ImageNet (points)")
  ax.set_ylabel("number of classes")
  ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.legend(fontsize=8)
  figure.tight_layout()
  return _png(figure)


def write_report(report_dir: str | os.PathLike, *, runs: Sequence[Mapping], eval_split: str, tiny: bool,
                 excluded: Sequence[Mapping] = (), class_names: Mapping[str, str] | None = None,
                 figure5: Mapping[str, Sequence[tuple[str, Sequence[str]]]] | None = None,
                 notes: Sequence[str] = ()) -> dict[str, Path]:
  """Writes the whole report; returns {artifact name: path}.

  `excluded`: [{"wnid", "reason"}]; `figure5`: {method or 'subset': [(wnid, [image paths])]} for the
  classes to show; `notes`: extra lines for the Markdown (e.g. which checkpoint each method used).
  """
  report_dir = Path(report_dir)
  class_names = dict(class_names or {})
  rows = table1_rows(runs)
  paths: dict[str, Path] = {}

  def put(name: str, data: bytes | str) -> Path:
    path = report_dir / name
    (atomic_write_bytes if isinstance(data, bytes) else atomic_write_text)(path, data)
    paths[name] = path
    return path

  put("table1.csv", table1_csv(rows))
  put("table1.md", (TINY_NOTICE + "\n\n" if tiny else "") + table1_markdown(rows, eval_split))
  runs_sorted = sorted(runs, key=lambda r: ([m.name for m in methods_lib.METHODS].index(r["method"]), r["resample"]))
  atomic_write_json(report_dir / "runs.json", {"table1": rows, "runs": runs_sorted, "excluded_classes": list(excluded),
                                               "eval_split": eval_split, "tiny_random_init_models": tiny})
  paths["runs.json"] = report_dir / "runs.json"

  md = ["# Study report", ""]
  if tiny:
    md += [TINY_NOTICE, ""]
  md += ["## Table 1", "", table1_markdown(rows, eval_split)]

  md += ["## Figure 6: per-class improvement over 10% ImageNet", ""]
  best_dm = best_dm_method(rows)
  per_method = {m: [r for r in runs if r["method"] == m] for m in {r["method"] for r in runs}}
  if methods_lib.BASELINE in per_method and "retrieval" in per_method and best_dm:
    baseline = statistics.mean_per_class([r["per_class_top1"] for r in per_method[methods_lib.BASELINE]])
    improvements = {}
    for name in (best_dm, "retrieval"):
      mean = statistics.mean_per_class([r["per_class_top1"] for r in per_method[name]])
      improvements[methods_lib.BY_NAME[name].display] = statistics.per_class_improvement(mean, baseline)
    put("figure6.png", figure6_histogram(improvements))
    atomic_write_json(report_dir / "figure6.json", improvements)
    paths["figure6.json"] = report_dir / "figure6.json"
    md += ["![Figure 6](figure6.png)", "",
           f"Per-class top-1 of each method (mean over its resamples) minus that of the 10% baseline (mean over"
           f" its runs), for Retrieval and the best DM method by Table 1 ({methods_lib.BY_NAME[best_dm].display})."
           f" Numbers: figure6.json.", ""]
    for label, series in improvements.items():
      ranked = sorted(series, key=lambda w: (series[w], w))
      show = lambda wnids: ", ".join(f"{class_names.get(w, w)} ({series[w]:+.1f})" for w in wnids)
      # Ranked by change, not by sign: with few classes every change can be positive (or negative).
      md += [f"- {label}: lowest change {show(ranked[:3])}; highest change {show(ranked[::-1][:3])}."]
    md += [""]
  else:
    md += ["Not drawn: it needs the 10% baseline, retrieval and at least one DM method in the run.", ""]

  md += ["## Figure 5: example images", ""]
  for method, grid_rows in (figure5 or {}).items():
    display = "10% ImageNet (subset images)" if method == "subset" else methods_lib.BY_NAME[method].display
    labelled = [(f"{class_names.get(w, w)}", p) for w, p in grid_rows]
    name = f"figure5_{method}.png"
    put(name, figure5_grid(display, labelled))
    md += [f"### {display}", "", f"![{display}]({name})", ""]

  md += ["## Excluded classes", ""]
  if excluded:
    md += [f"{len(excluded)} classes were excluded from augmentation, training and evaluation for every method:", "",
           "| wnid | class | reason |", "|---|---|---|"]
    md += [f"| {e['wnid']} | {class_names.get(e['wnid'], '')} | {e['reason']} |" for e in excluded]
  else:
    md += ["None."]
  md += [""]
  if notes:
    md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
  put("report.md", "\n".join(md))
  return paths
