"""The report stage: gathers the finished stages' outputs (every classifier's results, the augmentation sets,
the selections and grid searches, the protocol) and hands them to the report writer (report.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jax_aug import method_kinds
from jax_aug.data.classes import IMAGENET
from jax_aug.io import read_json
from jax_aug.study import kinds, protocol, selection, wiring
from jax_aug.study import methods as methods_lib
from jax_aug.study import report as report_lib
from jax_aug.study.stages import adoptions, comma_separated


def examples(records: list[dict], wnids: list[str], per_class: int) -> list[tuple[str, list[str]]]:
  """Figure 5 rows: for each class the first `per_class` images by path (stable across reruns)."""
  rows = []
  for wnid in wnids:
    paths = sorted(r["path"] for r in records if r["wnid"] == wnid)
    rows.append((wnid, paths[:per_class]))
  return rows


def write_study_report(config, workdir: Path, out: Path, *, exclusion: Path | None) -> None:
  """The study's report in `out` from the finished stages under `workdir`."""
  selected = methods_lib.study_methods(config)
  runs = []
  for method in selected:
    for r in range(config.n_resamples):
      path = wiring.classifier_results_path(workdir / "train" / method.name / f"r{r}")
      result = read_json(path)
      runs.append(
        {
          "method": method.name,
          "resample": r,
          "top1": result["top1"],
          "per_class_top1": result["per_class_top1"],
          "best_epoch": result["best_epoch"],
          "results": str(path.relative_to(workdir)),
          "reused_from": result.get("reused_from"),
        }
      )
  data = wiring.study_data(workdir / "data", exclusion)
  wanted = comma_separated(config.report.figure5_classes) or data.wnids
  shown = [w for w in wanted if w in set(data.wnids)][: config.report.figure5_max_classes]
  k = config.report.figure5_images_per_class
  augmentation = {"subset": data.split("subset")}
  selections, lr_searches = {}, {}
  for method in selected:
    if method.kind != method_kinds.BASELINE:
      augmentation[method.name] = wiring.load_augmentation(kinds.augmentation_dir(config, workdir, method))
    if kinds.selects_on_validation(config, method):
      selections[method.name] = read_json(workdir / "select" / method.name / selection.SELECTION_FILE)
    if method.kind == method_kinds.FINETUNED:
      lr_searches[method.name] = read_json(workdir / "lr_search" / method.name / selection.LR_SEARCH_FILE)
  figure5 = {name: examples(records, shown, k) for name, records in augmentation.items()}
  notes = [
    f"Stage {name} was kept under a changed config (config.adopt, {adoption['at']}): {'; '.join(adoption['changes'])}."
    for name, adoption in adoptions(workdir)
  ]
  if exclusion is None:
    notes.append("Retrieval was not selected, so no class was excluded (the exclusion list comes from retrieval).")
  display = {m.name: m.display for m in selected}
  imagenet = data.classes.dataset == IMAGENET
  if not imagenet:  # the paper's numbers are ImageNet's: no column of differences to another dataset
    selected = [dataclasses.replace(m, paper_top1=None, paper_standard_error=None) for m in selected]
    notes.append(
      f"Table 1's paper column is empty ('not given'): the paper's numbers are of another dataset than these"
      f" data ({data.classes.dataset})."
    )
  subset_label = report_lib.SUBSET_LABEL if imagenet else display.get("baseline_10pct", "10% subset")
  report_lib.write_report(
    out,
    runs=runs,
    methods=selected,
    eval_split=(
      wiring.EVAL_SPLIT_DESCRIPTION_MINI_WORLD
      if "mini_world" in config
      else wiring.EVAL_SPLIT_DESCRIPTION
      if imagenet
      else wiring.EVAL_SPLIT_DESCRIPTION_OWN_DATA
    ),
    tiny=config.report.tiny_random_init_models,
    excluded=wiring.read_exclusions(exclusion) if exclusion else [],
    class_names=data.class_names,
    figure5=figure5,
    notes=notes,
    figure5_rows=report_lib.figure5_paper_rows(
      augmentation, shown, k, config.method_configs, display, data.classes, subset_label
    ),
    class_images={w: paths[0] for w, paths in examples(augmentation["subset"], data.wnids, 1)},
    selections=selections,
    lr_searches=lr_searches,
    protocol=protocol.protocol_rows(config),
    subset_label=subset_label,
    tiny_notice=report_lib.TINY_NOTICE if imagenet else report_lib.TINY_NOTICE_OWN_DATA,
  )
