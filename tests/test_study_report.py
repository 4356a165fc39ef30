"""Report writer: Table 1 rows and numbers recomputed from the raw runs, figures that decode."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jax_aug.study import methods as methods_lib
from jax_aug.study import report
from jax_aug.study.config_files import load_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Every Table 1 row and ablation, as the method configs define them.
METHODS = methods_lib.all_methods(load_module(CONFIGS / "tiny.py").get_config())
CLASSES = ["n01440764", "n01443537", "n01484850"]


def _run(method, resample, per_class):
  return {
    "method": method,
    "resample": resample,
    "top1": float(np.mean(list(per_class.values()))),
    "per_class_top1": dict(zip(CLASSES, per_class.values())),
  }


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
    tmp_path / "report",
    runs=runs,
    methods=METHODS,
    eval_split="val",
    tiny=True,
    excluded=[{"wnid": "n09999999", "reason": "retrieval found 12 of 130 images"}],
    class_names={CLASSES[0]: "tench, Tinca tinca"},
    figure5={"subset": [(CLASSES[0], images), (CLASSES[1], images[:2])], "simple_prompt": [(CLASSES[0], images[:1])]},
  )

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
  # One decimal like the paper, the paper's number beside ours and the difference (54.667 - 60.1).
  assert "| Simple prompt | prompt | 54.7 ± 0.2 | 60.1 ± 0.2 | -5.4 | 3 |" in markdown
  assert "std / sqrt(n), ddof=1" in markdown
  assert "| n09999999 |  | retrieval found 12 of 130 images |" in markdown

  saved = json.loads(paths["runs.json"].read_text())
  assert len(saved["runs"]) == len(runs) and saved["tiny_random_init_models"] is True
  assert [r["resample"] for r in saved["runs"] if r["method"] == "retrieval"] == [0, 1]


def test_figures_decode_and_figure6_uses_best_dm_vs_retrieval(tmp_path):
  images = _images(tmp_path, 4)
  paths = report.write_report(
    tmp_path / "report",
    runs=_runs(),
    methods=METHODS,
    eval_split="val",
    tiny=False,
    figure5={"retrieval": [(c, images) for c in CLASSES]},
  )
  for name in ("figure5_retrieval.png", "figure6.png"):
    with Image.open(paths[name]) as image:
      image.load()
      assert image.size[0] > 100 and image.size[1] > 100
  improvements = json.loads(paths["figure6.json"].read_text())
  # per-class means: baseline (51, 59, 41); simple_prompt (55, 61.667, 47.333); retrieval (69, 61, 42.5)
  assert improvements["Simple prompt"] == pytest.approx(
    {CLASSES[0]: 4.0, CLASSES[1]: 2.6666667, CLASSES[2]: 6.3333333}, abs=1e-6
  )
  assert improvements["Retrieval"] == pytest.approx({CLASSES[0]: 18.0, CLASSES[1]: 2.0, CLASSES[2]: 1.5})
  markdown = paths["report.md"].read_text()
  assert report.TINY_NOTICE not in markdown
  assert (
    f"- Retrieval: lowest change {CLASSES[2]} (+1.5), {CLASSES[1]} (+2.0), {CLASSES[0]} (+18.0);"
    f" highest change {CLASSES[0]} (+18.0)"
  ) in markdown


def test_best_dm_method_ignores_baselines_and_retrieval():
  rows = report.table1_rows(
    _runs() + [_run("baseline_20pct", 0, {0: 99.0, 1: 99.0, 2: 99.0}), _run("clip_prompts", 0, {0: 50.0, 1: 50.0, 2: 50.0})],
    METHODS,
  )
  assert report.best_dm_method(rows) == "simple_prompt"
  single = [r for r in rows if r["method"] == "clip_prompts"][0]
  assert single["n"] == 1 and math.isnan(single["top1_standard_error"])
  assert "50.0 ± n/a (n=1)" in report.table1_markdown(rows, "val")


def test_bad_run_records_are_refused():
  with pytest.raises(ValueError, match="unknown method 'nope'"):
    report.table1_rows([_run("nope", 0, {0: 1.0, 1: 1.0, 2: 1.0})], METHODS)
  with pytest.raises(ValueError, match="resample indices repeat"):
    report.table1_rows([_run("retrieval", 0, {0: 1.0, 1: 1.0, 2: 1.0})] * 2, METHODS)


def _protocol_table1() -> dict[str, tuple[float, float]]:
  """{method name without spaces, lower case: (mean, SE)} from the shared protocol's methods table."""
  here = Path(__file__).resolve()
  # The project's shared/PROTOCOL.md where the checkout sits beside it, else its verbatim copy in docs/ (a
  # clean clone elsewhere, e.g. CI).
  candidates = [p / "shared" / "PROTOCOL.md" for p in here.parents] + [here.parents[1] / "docs" / "PROTOCOL.md"]
  protocol = next((p for p in candidates if p.is_file()), None)
  assert protocol is not None, f"shared/PROTOCOL.md not found above {here}, nor docs/PROTOCOL.md"
  table = {}
  for line in protocol.read_text().splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 4 and " ± " in cells[3]:
      mean, se = cells[3].split(" ± ")
      table[cells[1].replace(" ", "").lower()] = (float(mean), float(se))
  return table


def test_paper_column_equals_the_protocol_and_rows_follow_the_paper_order(tmp_path):
  runs = [_run(m.name, r, {0: 50.0 + r, 1: 60.0, 2: 40.0}) for m in METHODS if not m.ablation_of for r in range(2)]
  paths = report.write_report(tmp_path / "report", runs=runs, methods=METHODS, eval_split="val", tiny=False)
  with open(paths["table1.csv"]) as f:
    rows = list(csv.DictReader(f))
  protocol = _protocol_table1()
  assert len(protocol) == 13
  # The paper's Table 1 order (../shared/PROTOCOL.md lists the rows in it).
  assert [r["display"].replace(" ", "").lower() for r in rows] == list(protocol)
  for row in rows:
    assert (float(row["paper_top1_mean"]), float(row["paper_top1_standard_error"])) == protocol[
      row["display"].replace(" ", "").lower()
    ]
    assert float(row["difference_to_paper"]) == pytest.approx(float(row["top1_mean"]) - float(row["paper_top1_mean"]))
    assert row["ablation"] == "False"
  # Full precision in the CSV: the mean of the runs (50 + 60 + 40) / 3 and (51 + 60 + 40) / 3, 50.1666...
  assert rows[0]["top1_mean"] == repr((50.0 + 60.0 + 40.0) / 3 / 2 + (51.0 + 60.0 + 40.0) / 3 / 2)


def test_ablation_rows_follow_their_method_marked_with_the_papers_numbers(tmp_path):
  runs = [
    _run(m, r, {0: 60.0, 1: 61.0, 2: 62.0 + r})
    for m in (
      "ft_cluster_conditioning",
      "ft_cluster_conditioning_k15",
      "ft_cluster_conditioning_k10",
      "imagic",
      "simple_prompt_first_lemma",
      "simple_prompt",
    )
    for r in range(2)
  ]
  rows = report.table1_rows(runs, METHODS)
  assert [r["method"] for r in rows] == [
    "simple_prompt",
    "simple_prompt_first_lemma",
    "ft_cluster_conditioning",
    "ft_cluster_conditioning_k10",
    "ft_cluster_conditioning_k15",
    "imagic",
  ]
  assert [r["ablation"] for r in rows] == [False, True, False, True, True, False]
  k10, k15 = rows[3], rows[4]
  assert (k10["paper_top1_mean"], k10["paper_top1_standard_error"]) == (60.8, 0.2)  # paper Sec. 4.4
  assert (k15["paper_top1_mean"], k15["paper_top1_standard_error"]) == (60.6, 0.3)
  assert rows[1]["paper_top1_mean"] is None  # the paper gives no number for the first-lemma prompt
  markdown = report.table1_markdown(rows, "val")
  # mean of (61, 61.333) = 61.1667, SE = 0.1667; 61.1667 - 60.8 = +0.4
  assert "| FT cluster conditioning, k = 10 (ablation) | personalization | 61.2 ± 0.2 | 60.8 ± 0.2 | +0.4 | 2 |" in markdown
  assert "| Simple prompt, first lemma only (ablation) | prompt | 61.2 ± 0.2 | not given |  | 2 |" in markdown
  # An ablation is never Figure 6's best DM method nor a Figure 1 bar, even when it scores highest.
  best = [_run("ft_cluster_conditioning_k10", r, {0: 99.0, 1: 99.0, 2: 99.0}) for r in range(2)]
  rows = report.table1_rows(runs[:2] + best, METHODS)
  assert report.best_dm_method(rows) == "ft_cluster_conditioning"
  assert [b["method"] for b in report.figure1_bars(rows)] == ["ft_cluster_conditioning"]


def test_figure1_takes_the_best_method_of_each_family(tmp_path):
  rows = report.table1_rows(
    _runs()
    + [_run("clip_prompts", r, {0: 70.0, 1: 70.0, 2: 70.0 + r}) for r in range(2)]
    + [_run("imagic", r, {0: 10.0, 1: 10.0, 2: 10.0 + r}) for r in range(2)],
    METHODS,
  )
  bars = report.figure1_bars(rows)
  assert [b["method"] for b in bars] == ["baseline_10pct", "clip_prompts", "imagic", "retrieval"]
  with Image.open(io_bytes(report.figure1_chart(bars))) as image:
    image.load()
    assert image.size[0] > 100


def io_bytes(data):
  import io

  return io.BytesIO(data)


def test_figure5_row_d_shows_the_captions_four_clip_templates(tmp_path):
  images = _images(tmp_path, 6)
  shark = "n01491361"
  records = [
    {"wnid": shark, "path": images[0], "prompt": "a photo of many tigershark,Galeocerdocuvieri."},
    {"wnid": shark, "path": images[1], "prompt": "a cartoon tigershark,Galeocerdocuvieri."},
    {"wnid": shark, "path": images[2], "prompt": "a drawing of a tigershark,Galeocerdocuvieri."},
    {"wnid": shark, "path": images[3], "prompt": "a bad photo of a tigershark,Galeocerdocuvieri."},
    {"wnid": shark, "path": images[4], "prompt": "a cartoon tiger shark, Galeocerdo cuvieri."},  # spaced: not w(n)
  ]
  # Template order of the caption: bad photo, black and white, cartoon, many.
  assert report.clip_template_examples(records, shark) == [images[3], None, images[1], images[0]]
  augmentation = {
    "subset": [{"wnid": shark, "path": images[5]}],
    "clip_prompts": records,
    "retrieval": [{"wnid": shark, "path": p} for p in images[:3]],
    "boomerang": records,
  }
  rows = report.figure5_paper_rows(
    augmentation, [shark], 2, {"clip_prompts": {"prompt_lemmas": "all"}}, {m.name: m.display for m in METHODS}
  )
  assert [label for label, _ in rows] == ["A. 10% ImageNet", "D. CLIP prompts", "I. Retrieval"]
  assert rows[2][1] == [(shark, sorted(images[:3])[:2])]
  with Image.open(io_bytes(report.figure5_paper(rows, {shark: "tiger shark"}))) as image:
    image.load()
    assert image.size[0] > 100
