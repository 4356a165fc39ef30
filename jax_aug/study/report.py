"""The study's report: Table 1 (Markdown + CSV), every run's numbers (JSON), Figure 5 grids, Figure 6
histogram and the excluded classes, all written atomically into `<workdir>/report/`.

Inputs are the Table 1 rows of the run (`jax_aug.study.methods.Method`: name, display, family, the paper's
numbers) and plain run records, one per trained classifier:

  {"method": str, "resample": int, "top1": float, "per_class_top1": {wnid: float}, ...}

with accuracies in percent. Table arithmetic lives in `statistics.py`; this module formats and draws.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jax_aug.data.classes import DatasetClasses  # noqa: E402
from jax_aug.io import atomic_write_bytes, atomic_write_json, atomic_write_text, load_image_file  # noqa: E402
from jax_aug.study import findings as findings_lib  # noqa: E402
from jax_aug.study import methods as methods_lib  # noqa: E402
from jax_aug.study import statistics  # noqa: E402

TABLE_CAPTION = (
  "Table 1: top-1 accuracy (%) of the downstream classifier on {eval_split}, mean ± standard"
  " error of the mean over n classifiers, one per resampled augmentation set (SE = std / sqrt(n), ddof=1;"
  " for the baselines the n runs differ only in their training seed)."
)
_TINY_NOTICE_TAIL = (
  " Its numbers test the machinery (every stage ran, the statistics are computed right), not the science:"
  " they say nothing about diffusion models vs. retrieval."
)
TINY_NOTICE = "**This run used tiny random-init models and a synthetic ImageNet.**" + _TINY_NOTICE_TAIL
# The same on a dataset other than ImageNet (jax_aug.data.classes): the data are the user's, the models tiny.
TINY_NOTICE_OWN_DATA = "**This run used tiny random-init models.**" + _TINY_NOTICE_TAIL
# The 10% baseline's name in the report's figures and text; a dataset other than ImageNet passes its own.
SUBSET_LABEL = "10% ImageNet"


def table1_rows(runs: Sequence[Mapping], methods: Sequence[methods_lib.Method]) -> list[dict]:
  """One row per method present in `runs`, in the order of `methods` (Table 1's: ablations after the method
  they vary): method, display, family, mean, SE, n, the paper's mean and SE (None where it gives none),
  ours - paper, and whether the row is an ablation."""
  by_method: dict[str, list[Mapping]] = {}
  known = {m.name for m in methods}
  for run in runs:
    if run["method"] not in known:
      raise ValueError(f"run record names unknown method {run['method']!r}: expected one of {sorted(known)}")
    by_method.setdefault(run["method"], []).append(run)
  rows = []
  for method in methods:
    if method.name not in by_method:
      continue
    method_runs = sorted(by_method[method.name], key=lambda r: r["resample"])
    resamples = [r["resample"] for r in method_runs]
    if len(set(resamples)) != len(resamples):
      raise ValueError(f"method {method.name}: resample indices repeat in the run records: {resamples}")
    mean, se = statistics.mean_and_standard_error([r["top1"] for r in method_runs])
    rows.append(
      {
        "method": method.name,
        "display": method.display,
        "family": method.family,
        "top1_mean": mean,
        "top1_standard_error": se,
        "n": len(method_runs),
        "paper_top1_mean": method.paper_top1,
        "paper_top1_standard_error": method.paper_standard_error,
        "difference_to_paper": None if method.paper_top1 is None else mean - method.paper_top1,
        "ablation": bool(method.ablation_of),
      }
    )
  return rows


def best_dm_method(rows: Sequence[Mapping]) -> str | None:
  """The diffusion-model method with the highest mean top-1 (Figure 6 compares it with retrieval)."""
  dm = [r for r in rows if r["family"] in methods_lib.DM_FAMILIES and not r["ablation"]]
  return max(dm, key=lambda r: r["top1_mean"])["method"] if dm else None


def _format_mean_se(mean: float, se: float | None) -> str:
  """One decimal, as the paper's Table 1."""
  if se is None:
    return f"{mean:.1f} (no SE given)"
  return f"{mean:.1f} ± {se:.1f}" if math.isfinite(se) else f"{mean:.1f} ± n/a (n=1)"


def table1_markdown(rows: Sequence[Mapping], eval_split: str) -> str:
  lines = ["| Method | Family | Top-1 (%), ours | Top-1 (%), paper | ours - paper | n |", "|---|---|---|---|---|---|"]
  for r in rows:
    paper = (
      "not given" if r["paper_top1_mean"] is None else _format_mean_se(r["paper_top1_mean"], r["paper_top1_standard_error"])
    )
    difference = "" if r["difference_to_paper"] is None else f"{r['difference_to_paper']:+.1f}"
    lines.append(
      f"| {r['display']} | {r['family']} | {_format_mean_se(r['top1_mean'], r['top1_standard_error'])}"
      f" | {paper} | {difference} | {r['n']} |"
    )
  return "\n".join(lines) + "\n\n" + TABLE_CAPTION.format(eval_split=eval_split) + "\n"


CSV_COLUMNS = (
  "method",
  "display",
  "family",
  "top1_mean",
  "top1_standard_error",
  "n",
  "paper_top1_mean",
  "paper_top1_standard_error",
  "difference_to_paper",
  "ablation",
)


def table1_csv(rows: Sequence[Mapping]) -> str:
  """Full precision (repr of the floats); empty cells where the paper gives no number."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(CSV_COLUMNS)
  for r in rows:
    writer.writerow(["" if r[c] is None else repr(r[c]) if isinstance(r[c], float) else r[c] for c in CSV_COLUMNS])
  return buffer.getvalue()


def figure1_bars(rows: Sequence[Mapping]) -> list[dict]:
  """Figure 1: the baselines and the best method of each augmentation family (by our mean top-1), with
  the paper's number of the same method; ablations are not candidates."""
  bars = [r for r in rows if r["family"] == methods_lib.BASELINE_FAMILY]
  for family in (*methods_lib.DM_FAMILIES, "retrieval"):
    members = [r for r in rows if r["family"] == family and not r["ablation"]]
    if members:
      bars.append(max(members, key=lambda r: r["top1_mean"]))
  return bars


def figure1_chart(bars: Sequence[Mapping]) -> bytes:
  """Bars with standard-error whiskers: ours and, beside each, the paper's number for that method."""
  if not bars:
    raise ValueError("figure 1: no methods to draw")
  x = np.arange(len(bars))
  figure, ax = plt.subplots(figsize=(1.3 * len(bars) + 2, 3.8))

  def errors(key):
    return [0.0 if (r[key] is None or not math.isfinite(r[key])) else r[key] for r in bars]

  ax.bar(x - 0.2, [r["top1_mean"] for r in bars], 0.4, yerr=errors("top1_standard_error"), capsize=3, label="ours")
  paper = [np.nan if r["paper_top1_mean"] is None else r["paper_top1_mean"] for r in bars]
  ax.bar(x + 0.2, paper, 0.4, yerr=errors("paper_top1_standard_error"), capsize=3, label="paper", alpha=0.6)
  ax.set_xticks(x, [f"{r['display']}\n({r['family']})" for r in bars], fontsize=7, rotation=20, ha="right")
  ax.set_ylabel("top-1 (%), mean ± SE")
  ax.legend(fontsize=8)
  figure.tight_layout()
  return _png(figure)


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
  figure, axes = plt.subplots(len(rows), columns, figsize=(1.2 * columns + 1.6, 1.2 * len(rows) + 0.5), squeeze=False)
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


# Figure 5 of the paper: its rows A-I, and the four CLIP templates its caption names for row D.
FIGURE5_ROWS = (
  ("A", "subset"),
  ("B", "simple_prompt"),
  ("C", "simple_prompt_no_ws"),
  ("D", "clip_prompts"),
  ("E", "ft_conditioning"),
  ("F", "textual_inversion"),
  ("G", "imagic"),
  ("H", "pseudo_word_dm"),
  ("I", "retrieval"),
)
FIGURE5_CLIP_TEMPLATES = (
  "a bad photo of a {}.",
  "a black and white photo of the {}.",
  "a cartoon {}.",
  "a photo of many {}.",
)


def _first_paths(records: Sequence[Mapping], wnid: str, count: int) -> list[str]:
  return sorted(r["path"] for r in records if r["wnid"] == wnid)[:count]


def clip_template_examples(
  records: Sequence[Mapping], wnid: str, lemmas: str = "all", classes: DatasetClasses | None = None
) -> list[str | None]:
  """Row D: for each template of the Figure 5 caption, the first image (by path) of class `wnid` (of
  `classes`, default ImageNet) whose prompt is that template filled with w(n); None where the set has no
  such image (few images per class)."""
  from jax_aug.data import prompts
  from jax_aug.data.classes import imagenet

  name = prompts.no_ws_name((classes or imagenet())[wnid], lemmas)
  picked = []
  for template in FIGURE5_CLIP_TEMPLATES:
    matches = sorted(r["path"] for r in records if r["wnid"] == wnid and r.get("prompt") == template.format(name))
    picked.append(matches[0] if matches else None)
  return picked


def figure5_paper_rows(
  augmentation: Mapping[str, Sequence[Mapping]],
  wnids: Sequence[str],
  per_class: int,
  method_configs,
  display: Mapping[str, str],
  classes: DatasetClasses | None = None,
  subset_label: str = SUBSET_LABEL,
) -> list[tuple[str, list[tuple[str, list[str | None]]]]]:
  """The rows A-I of the paper's Figure 5 the run has: (row label, [(wnid, image paths or None)]);
  `display`: each method's Table 1 label; `classes`: the dataset of `wnids` (default ImageNet)."""
  rows = []
  for letter, name in FIGURE5_ROWS:
    if name not in augmentation:
      continue
    records = augmentation[name]
    if name == "clip_prompts":
      lemmas = method_configs[name].get("prompt_lemmas", "all")
      cells = [(w, clip_template_examples(records, w, lemmas, classes)) for w in wnids]
    else:
      cells = [(w, _first_paths(records, w, per_class)) for w in wnids]
    label = subset_label if name == "subset" else display[name]
    rows.append((f"{letter}. {label}", cells))
  return rows


def figure5_paper(
  rows: Sequence[tuple[str, Sequence[tuple[str, Sequence[str | None]]]]], class_names: Mapping[str, str], thumb: int = 64
) -> bytes:
  """One grid like the paper's Figure 5: a row per method (A-I), columns grouped by class."""
  if not rows:
    raise ValueError("figure 5: no method rows to show")
  wnids = [w for w, _ in rows[0][1]]
  width = {w: max(len(dict(cells)[w]) for _, cells in rows) for w in wnids}
  columns = sum(width.values())
  figure, axes = plt.subplots(len(rows), columns, figsize=(0.9 * columns + 1.8, 0.9 * len(rows) + 0.6), squeeze=False)
  for i, (label, cells) in enumerate(rows):
    j = 0
    for wnid, paths in cells:
      for slot in range(width[wnid]):
        ax = axes[i][j]
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
          spine.set_visible(False)
        path = paths[slot] if slot < len(paths) else None
        if path is not None:
          ax.imshow(np.asarray(load_image_file(path).resize((thumb, thumb), Image.Resampling.BICUBIC)))
        if i == 0 and slot == 0:
          ax.set_title(class_names.get(wnid, wnid)[:20], fontsize=7, loc="left")
        if j == 0:
          ax.set_ylabel(label[:30], fontsize=7, rotation=0, ha="right", va="center")
        j += 1
  figure.tight_layout()
  return _png(figure)


def figure6_histogram(improvements: Mapping[str, Mapping[str, float]], subset_label: str = SUBSET_LABEL) -> bytes:
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
  ax.set_xlabel(f"per-class top-1 improvement over {subset_label} (points)")
  ax.set_ylabel("number of classes")
  ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.legend(fontsize=8)
  figure.tight_layout()
  return _png(figure)


def figure6_examples(
  changes: Mapping[str, Mapping[str, float]],
  class_images: Mapping[str, str],
  class_names: Mapping[str, str],
  per_side: int = 3,
  thumb: int = 80,
) -> bytes:
  """Figure 6's images: per method, a real image of each of the classes that lose most (left) and gain
  most (right) against the 10% baseline, labelled with the change."""
  figure, axes = plt.subplots(
    len(changes), 2 * per_side, figsize=(1.3 * 2 * per_side + 1.5, 1.5 * len(changes) + 0.4), squeeze=False
  )
  for i, (label, series) in enumerate(changes.items()):
    ranked = sorted(series, key=lambda w: (series[w], w))
    shown = ranked[:per_side] + ranked[::-1][:per_side][::-1]
    for j in range(2 * per_side):
      ax = axes[i][j]
      ax.set_xticks([])
      ax.set_yticks([])
      if j < len(shown) and shown[j] in class_images:
        wnid = shown[j]
        ax.imshow(np.asarray(load_image_file(class_images[wnid]).resize((thumb, thumb), Image.Resampling.BICUBIC)))
        ax.set_title(f"{class_names.get(wnid, wnid)[:14]} {series[wnid]:+.1f}", fontsize=6)
      if j == 0:
        ax.set_ylabel(f"{label[:24]}\nlose most | gain most", fontsize=7, rotation=0, ha="right", va="center")
  figure.tight_layout()
  return _png(figure)


def lr_search_chart(lr_searches: Mapping[str, Mapping], display: Mapping[str, str]) -> bytes:
  """Every grid run's validation loss per epoch, one panel per method; the chosen run drawn bold."""
  figure, axes = plt.subplots(1, len(lr_searches), figsize=(3.2 * len(lr_searches) + 0.5, 3), squeeze=False)
  for ax, (method, search) in zip(axes[0], lr_searches.items()):
    for name, run in search["runs"].items():
      epochs = [h["epoch"] for h in run["history"]]
      ax.plot(
        epochs,
        [h["val_loss"] for h in run["history"]],
        marker="o",
        linewidth=2.5 if name == search["chosen"] else 1,
        label=f"x{run['factor']:g}" + (" (chosen)" if name == search["chosen"] else ""),
      )
    ax.set_title(display[method], fontsize=8)
    ax.set_xlabel("epoch", fontsize=7)
    ax.set_ylabel("validation loss", fontsize=7)
    ax.legend(fontsize=6)
  figure.tight_layout()
  return _png(figure)


def _lr_search_markdown(lr_searches: Mapping[str, Mapping], display: Mapping[str, str]) -> list[str]:
  md = [
    "| Method | grid point (factor) | learning rates (batch-scaled) | best validation loss | chosen |",
    "|---|---|---|---|---|",
  ]
  for method, search in lr_searches.items():
    for name, run in search["runs"].items():
      rates = ", ".join(f"{g} {v:.3g}" for g, v in sorted(run["learning_rate"].items()))
      md.append(
        f"| {display[method]} | x{run['factor']:g} | {rates} |"
        f" {run['best_validation_loss']:.5f} | {'yes' if name == search['chosen'] else ''} |"
      )
  return md


def _selection_markdown(selections: Mapping[str, Mapping], display: Mapping[str, str]) -> list[str]:
  md = []
  for method, selection in selections.items():
    chosen = selection["chosen"]
    scores = ", ".join(f"{name} {top1:.2f}" for name, top1 in sorted(selection["validation_top1"].items()))
    what = (
      f"checkpoint {chosen} ({', '.join(selection['roles'][chosen])}) of run {selection['finetune_run']}"
      if "roles" in selection
      else f"{chosen}"
    )
    md.append(
      f"- {display[method]}: {what} chosen by the validation top-1 (%) of a classifier on subset + its samples"
      f" (resampled set {selection['resample']}): {scores}. That classifier is the method's run"
      f" r{selection['resample']} (reused, not retrained)."
    )
  return md


def write_report(
  report_dir: str | os.PathLike,
  *,
  runs: Sequence[Mapping],
  methods: Sequence[methods_lib.Method],
  eval_split: str,
  tiny: bool,
  excluded: Sequence[Mapping] = (),
  class_names: Mapping[str, str] | None = None,
  figure5: Mapping[str, Sequence[tuple[str, Sequence[str]]]] | None = None,
  notes: Sequence[str] = (),
  figure5_rows: Sequence | None = None,
  class_images: Mapping[str, str] | None = None,
  selections: Mapping[str, Mapping] | None = None,
  lr_searches: Mapping[str, Mapping] | None = None,
  protocol: Sequence[Mapping] = (),
  subset_label: str = SUBSET_LABEL,
  tiny_notice: str = TINY_NOTICE,
) -> dict[str, Path]:
  """Writes the whole report; returns {artifact name: path}.

  `methods`: the run's Table 1 rows in their order (`jax_aug.study.methods.study_methods`);
  `excluded`: [{"wnid", "reason"}]; `figure5`: {method or 'subset': [(wnid, [image paths])]} for the
  classes to show (one grid per method); `figure5_rows`: the paper's rows A-I (`figure5_paper_rows`);
  `class_images`: {wnid: a real image} for Figure 6's examples; `selections` / `lr_searches`: the select
  stages' selection.json and the lr_search stages' lr_search.json by method; `protocol`: rows of
  `jax_aug.study.protocol.protocol_rows`; `notes`: extra lines for the Markdown; `subset_label`,
  `tiny_notice`: the 10% baseline's name and the tiny-run notice (datasets other than ImageNet pass theirs).
  """
  report_dir = Path(report_dir)
  class_names = dict(class_names or {})
  rows = table1_rows(runs, methods)
  display = {m.name: m.display for m in methods}
  paths: dict[str, Path] = {}

  def put(name: str, data: bytes | str) -> Path:
    path = report_dir / name
    (atomic_write_bytes if isinstance(data, bytes) else atomic_write_text)(path, data)
    paths[name] = path
    return path

  put("table1.csv", table1_csv(rows))
  put("table1.md", (tiny_notice + "\n\n" if tiny else "") + table1_markdown(rows, eval_split))
  order = [m.name for m in methods]
  runs_sorted = sorted(runs, key=lambda r: (order.index(r["method"]), r["resample"]))
  atomic_write_json(
    report_dir / "runs.json",
    {
      "table1": rows,
      "runs": runs_sorted,
      "excluded_classes": list(excluded),
      "eval_split": eval_split,
      "tiny_random_init_models": tiny,
      "lr_search": dict(lr_searches or {}),
      "selection": dict(selections or {}),
    },
  )
  paths["runs.json"] = report_dir / "runs.json"

  md = ["# Study report", ""]
  if tiny:
    md += [tiny_notice, ""]
  md += ["## Table 1", "", table1_markdown(rows, eval_split)]
  if any(r["ablation"] for r in rows):
    md += ["Rows marked (ablation) are the paper's ablations (Sec. 3.2, 4.4), not methods of its Table 1.", ""]

  bars = figure1_bars(rows)
  if bars:
    put("figure1.png", figure1_chart(bars))
    md += [
      "## Figure 1: best method of each family",
      "",
      "![Figure 1](figure1.png)",
      "",
      "Ours (mean ± SE over the resamples) beside the paper's number for the same method.",
      "",
    ]

  md += [f"## Figure 6: per-class improvement over {subset_label}", ""]
  best_dm = best_dm_method(rows)
  figure6_check = None
  per_method = {m: [r for r in runs if r["method"] == m] for m in {r["method"] for r in runs}}
  if methods_lib.BASELINE in per_method and "retrieval" in per_method and best_dm:
    baseline = statistics.mean_per_class([r["per_class_top1"] for r in per_method[methods_lib.BASELINE]])
    improvements = {}
    for name in (best_dm, "retrieval"):
      mean = statistics.mean_per_class([r["per_class_top1"] for r in per_method[name]])
      improvements[display[name]] = statistics.per_class_improvement(mean, baseline)
    figure6_check = findings_lib.figure6_finding(improvements, display["retrieval"], display[best_dm])
    put("figure6.png", figure6_histogram(improvements, subset_label))
    atomic_write_json(report_dir / "figure6.json", improvements)
    paths["figure6.json"] = report_dir / "figure6.json"
    md += ["![Figure 6](figure6.png)", ""]
    if class_images:
      put("figure6_examples.png", figure6_examples(improvements, class_images, class_names))
      md += [
        "![Figure 6 examples](figure6_examples.png)",
        "",
        f"A real {subset_label} image of each class that loses most (left) and gains most (right).",
        "",
      ]
    md += [
      f"Per-class top-1 of each method (mean over its resamples) minus that of the 10% baseline (mean over"
      f" its runs), for Retrieval and the best DM method by Table 1 ({display[best_dm]})."
      f" Numbers: figure6.json.",
      "",
    ]
    for label, series in improvements.items():
      ranked = sorted(series, key=lambda w: (series[w], w))
      show = lambda wnids, series=series: ", ".join(f"{class_names.get(w, w)} ({series[w]:+.1f})" for w in wnids)
      # Ranked by change, not by sign: with few classes every change can be positive (or negative).
      md += [f"- {label}: lowest change {show(ranked[:3])}; highest change {show(ranked[::-1][:3])}."]
    md += [""]
  else:
    md += ["Not drawn: it needs the 10% baseline, retrieval and at least one DM method in the run.", ""]

  table1_findings = findings_lib.check_findings(rows)
  atomic_write_json(report_dir / "findings.json", {"table1": table1_findings, "figure6": figure6_check})
  paths["findings.json"] = report_dir / "findings.json"
  md += [
    "## What this run reproduces of the paper",
    "",
    findings_lib.summary_paragraph(table1_findings, figure6_check),
    "",
    f"A finding is reproduced when our difference has the paper's sign and exceeds"
    f" {findings_lib.RESOLUTION:g} standard errors of the difference; numbers: findings.json.",
    "",
  ]

  md += ["## Figure 5: example images", ""]
  if figure5_rows:
    put("figure5.png", figure5_paper(figure5_rows, class_names))
    md += [
      "![Figure 5](figure5.png)",
      "",
      f"Rows as in the paper's Figure 5 (those this run has): A {subset_label}, B simple prompt, C simple prompt"
      " (no ws), D CLIP prompts with the caption's four templates ('a bad photo of a w(n).', 'a black and"
      " white photo of the w(n).', 'a cartoon w(n).', 'a photo of many w(n).'; blank where no image of the"
      " set had that template), E FT conditioning, F textual inversion, G Imagic, H pseudoword + DM,"
      " I retrieval. Per-method grids follow.",
      "",
    ]
  for method, grid_rows in (figure5 or {}).items():
    title = f"{subset_label} (subset images)" if method == "subset" else display[method]
    labelled = [(f"{class_names.get(w, w)}", p) for w, p in grid_rows]
    name = f"figure5_{method}.png"
    put(name, figure5_grid(title, labelled))
    md += [f"### {title}", "", f"![{title}]({name})", ""]

  md += ["## Excluded classes", ""]
  if excluded:
    md += [
      f"{len(excluded)} classes were excluded from augmentation, training and evaluation for every method:",
      "",
      "| wnid | class | reason |",
      "|---|---|---|",
    ]
    md += [f"| {e['wnid']} | {class_names.get(e['wnid'], '')} | {e['reason']} |" for e in excluded]
  else:
    md += ["None."]
  md += [""]
  if lr_searches:
    put("lr_search.png", lr_search_chart(lr_searches, display))
    md += [
      "## Learning-rate grid search (fine-tuned methods)",
      "",
      "One fine-tuning run per grid point (every group's base learning rate times the factor); the run"
      " with the lowest validation loss wins (the paper trains by the validation loss), then its"
      " checkpoints are selected below. Every run's curve: lr_search.png.",
      "",
      *_lr_search_markdown(lr_searches, display),
      "",
      "![learning-rate search](lr_search.png)",
      "",
    ]
  if selections:
    md += ["## Choices by downstream validation accuracy", "", *_selection_markdown(selections, display), ""]
  if protocol:
    md += [
      "## Protocol",
      "",
      "Every setting this run used; 'not given in the paper' marks our choices.",
      "",
      "| setting | this run | paper |",
      "|---|---|---|",
    ]
    md += [f"| {p['setting']} | {p['value']} | {p['source']} |" for p in protocol]
    md += [""]
    atomic_write_json(report_dir / "protocol.json", list(protocol))
    paths["protocol.json"] = report_dir / "protocol.json"
  if notes:
    md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
  put("report.md", "\n".join(md))
  return paths
