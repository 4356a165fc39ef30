"""Report writer: Table 1 rows and numbers recomputed from the raw runs, figures that decode."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from jax_aug.study import report

CLASSES = ["n01440764", "n01443537", "n01484850"]


def _run(method, resample, per_class):
  return {"method": method, "resample": resample, "top1": float(np.mean(list(per_class.values()))),
          "per_class_top1": dict(zip(CLASSES, per_class.values()))}


def _runs():
  return [
      _run("baseline_10pct", 0, {0: 50.0, 1: 60.0, 2: 40.0}),
      _run("baseline_10pct", 1, {0: 52.0, 1: 58.0, 2: 42.0}),
      _run("simple_prompt", 0, {0: 55.0, 1: 60.0, 2: 50.0}),
      _run("simple_prompt", 1, {0: 57.0, 1: 61.0, 2: 45.0}),
      _run("simple_prompt", 2, {0: 53.0, 1: 64.0, 2: 47.0}),
      _run("retrieval", 1, {0: 70.0, 1: 60.0, 2: 41.0}),
      _run("retrieval", 0, {0: 68.0, 1: 62.0, 2: 44.0}),
  ]


def _images(tmp_path, n):
  paths = []
  for i in range(n):
    path = tmp_path / "img" / f"{i}.png"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(np.full((20 + i, 30, 3), 40 * i, np.uint8)).save(path)
    paths.append(str(path))
  return paths


def test_table1_rows_and_csv_recompute_from_raw_runs(tmp_path):
  runs = _runs()
  images = _images(tmp_path, 3)
  paths = report.write_report(
      tmp_path / "report", runs=runs, eval_split="val", tiny=True,
      excluded=[{"wnid": "n09999999", "reason": "retrieval found 12 of 130 images"}],
      class_names={CLASSES[0]: "tench, Tinca tinca"},
      figure5={"subset": [(CLASSES[0], images), (CLASSES[1], images[:2])],
               "simple_prompt": [(CLASSES[0], images[:1])]})

  with open(paths["table1.csv"]) as f:
    rows = list(csv.DictReader(f))
  assert [r["method"] for r in rows] == ["baseline_10pct", "simple_prompt", "retrieval"]  # Table 1 order
  assert [r["family"] for r in rows] == ["baseline", "prompt", "retrieval"]
  for row in rows:
    top1 = [r["top1"] for r in runs if r["method"] == row["method"]]
    n = len(top1)
    mean = sum(top1) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in top1) / (n - 1)) / math.sqrt(n)
    assert int(row["n"]) == n
    assert float(row["top1_mean"]) == pytest.approx(mean, abs=1e-12)
    assert float(row["top1_standard_error"]) == pytest.approx(se, abs=1e-12)
  # simple_prompt: top1 = 55, 54.333, 54.667: by hand mean 54.6667, s = 1/3, SE = (1/3)/sqrt(3) = 0.19245
  assert float(rows[1]["top1_mean"]) == pytest.approx(54.6666667, abs=1e-6)
  assert float(rows[1]["top1_standard_error"]) == pytest.approx(0.19245009, abs=1e-6)

  markdown = paths["report.md"].read_text()
  assert report.TINY_NOTICE in markdown and report.TINY_NOTICE in paths["table1.md"].read_text()
  assert "| Simple prompt | prompt | 54.67 ± 0.19 | 3 |" in markdown
  assert "std / sqrt(n), ddof=1" in markdown
  assert "| n09999999 |  | retrieval found 12 of 130 images |" in markdown

  saved = json.loads(paths["runs.json"].read_text())
  assert len(saved["runs"]) == len(runs) and saved["tiny_random_init_models"] is True
  assert [r["resample"] for r in saved["runs"] if r["method"] == "retrieval"] == [0, 1]


def test_figures_decode_and_figure6_uses_best_dm_vs_retrieval(tmp_path):
  images = _images(tmp_path, 4)
  paths = report.write_report(tmp_path / "report", runs=_runs(), eval_split="val", tiny=False,
                              figure5={"retrieval": [(c, images) for c in CLASSES]})
  for name in ("figure5_retrieval.png", "figure6.png"):
    with Image.open(paths[name]) as image:
      image.load()
      assert image.size[0] > 100 and image.size[1] > 100
  improvements = json.loads(paths["figure6.json"].read_text())
  # per-class means: baseline (51, 59, 41); simple_prompt (55, 61.667, 47.333); retrieval (69, 61, 42.5)
  assert improvements["Simple prompt"] == pytest.approx(
      {CLASSES[0]: 4.0, CLASSES[1]: 2.6666667, CLASSES[2]: 6.3333333}, abs=1e-6)
  assert improvements["Retrieval"] == pytest.approx({CLASSES[0]: 18.0, CLASSES[1]: 2.0, CLASSES[2]: 1.5})
  markdown = paths["report.md"].read_text()
  assert report.TINY_NOTICE not in markdown
  assert (f"- Retrieval: lowest change {CLASSES[2]} (+1.5), {CLASSES[1]} (+2.0), {CLASSES[0]} (+18.0);"
          f" highest change {CLASSES[0]} (+18.0)") in markdown


def test_best_dm_method_ignores_baselines_and_retrieval():
  rows = report.table1_rows(_runs() + [_run("baseline_20pct", 0, {0: 99.0, 1: 99.0, 2: 99.0}),
                                       _run("clip_prompts", 0, {0: 50.0, 1: 50.0, 2: 50.0})])
  assert report.best_dm_method(rows) == "simple_prompt"
  single = [r for r in rows if r["method"] == "clip_prompts"][0]
  assert single["n"] == 1 and math.isnan(single["top1_standard_error"])
  assert "50.00 ± n/a (n=1)" in report.table1_markdown(rows, "val")


def test_bad_run_records_are_refused():
  with pytest.raises(ValueError, match="unknown method 'nope'"):
    report.table1_rows([_run("nope", 0, {0: 1.0, 1: 1.0, 2: 1.0})])
  with pytest.raises(ValueError, match="resample indices repeat"):
    report.table1_rows([_run("retrieval", 0, {0: 1.0, 1: 1.0, 2: 1.0})] * 2)
