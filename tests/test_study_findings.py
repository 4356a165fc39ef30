"""The paper's findings checked on a run's Table 1 (jax_aug.study.findings), against verdicts worked out by hand
from the paper's Table 1 (../shared/PROTOCOL.md) and from changed numbers."""

import json
import math
from pathlib import Path

import pytest

from jax_aug.study import findings, report
from jax_aug.study import methods as methods_lib
from jax_aug.study.config_files import load_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
METHODS = methods_lib.all_methods(load_module(CONFIGS / "tiny.py").get_config())
# The paper's Table 1 (PROTOCOL.md), copied by hand: mean, SE.
PAPER = {
  "baseline_10pct": (57.2, 0.2),
  "baseline_20pct": (70.2, 0.3),
  "boomerang": (56.3, 0.3),
  "simple_prompt_no_ws": (60.0, 0.3),
  "simple_prompt": (60.1, 0.2),
  "sariyildiz_prompts": (60.8, 0.2),
  "clip_prompts": (60.9, 0.2),
  "ft_conditioning": (60.8, 0.1),
  "ft_cluster_conditioning": (60.9, 0.2),
  "imagic": (61.0, 0.3),
  "textual_inversion": (61.0, 0.4),
  "pseudo_word_dm": (61.2, 0.2),
  "retrieval": (62.6, 0.1),
}


def _runs(table):
  """Two resample runs per method whose mean and SE (std ddof=1 / sqrt 2 = half their gap) are `table`'s."""
  return [
    {"method": name, "resample": r, "top1": mean + sign * se, "per_class_top1": {}}
    for name, (mean, se) in table.items()
    for r, sign in enumerate((-1, 1))
  ]


def _rows(table):
  return report.table1_rows(_runs(table), METHODS)


def test_verdict_rule():
  assert findings.verdict(1.0, 0.4) == "reproduced"  # 1.0 > 2 x 0.4
  assert findings.verdict(0.8, 0.4) == "not resolved"  # exactly 2 SE: not beyond
  assert findings.verdict(-0.81, 0.4) == "reversed"
  assert findings.verdict(5.0, math.nan) == "not resolved"  # a single run: no error estimate


def test_the_papers_own_table_reproduces_three_findings_and_leaves_personalization_unresolved():
  rows = _rows(PAPER)
  assert len(rows) == 13
  for row in rows:  # the runs stand for the paper's means and SEs
    assert (row["top1_mean"], row["top1_standard_error"]) == pytest.approx(PAPER[row["method"]])
  checked = findings.check_findings(rows)
  assert [f["verdict"] for f in checked] == ["reproduced", "not resolved", "reproduced", "reproduced"]
  simple, personal, retrieval, upper = checked
  # 60.1 - 57.2 = 2.9, SE sqrt(0.2^2 + 0.2^2) = 0.283.
  assert (simple["higher"]["method"], simple["lower"]["method"]) == ("simple_prompt", "baseline_10pct")
  assert simple["difference"] == pytest.approx(2.9) and simple["difference_standard_error"] == pytest.approx(
    0.2828, abs=1e-4
  )
  # Best personalization (pseudoword + DM 61.2) vs best prompt (CLIP prompts 60.9): 0.3 < 2 x 0.283.
  assert (personal["higher"]["method"], personal["lower"]["method"]) == ("pseudo_word_dm", "clip_prompts")
  assert personal["difference"] == pytest.approx(0.3)
  # Retrieval 62.6 vs the best DM method, pseudoword + DM 61.2 (Boomerang and the prompts are DM methods too).
  assert retrieval["lower"]["method"] == "pseudo_word_dm" and retrieval["difference"] == pytest.approx(1.4)
  assert (upper["higher"]["method"], upper["lower"]["method"]) == ("baseline_20pct", "retrieval")
  for f in checked:  # our numbers are the paper's: the paper's side says the same
    assert f["paper"]["difference"] == pytest.approx(f["difference"]) and f["paper"]["verdict"] == f["verdict"]


def test_each_side_picks_its_own_best_and_a_reversal_is_named():
  table = dict(PAPER, textual_inversion=(63.0, 0.1), retrieval=(60.0, 0.1))
  personal, retrieval = findings.check_findings(_rows(table))[1:3]
  # Ours: textual inversion is the best personalization and the best DM method; the paper's pick stays its own.
  assert personal["higher"]["method"] == "textual_inversion" and personal["paper"]["higher"] == "pseudo_word_dm"
  assert personal["difference"] == pytest.approx(63.0 - 60.9) and personal["verdict"] == "reproduced"
  assert retrieval["lower"]["method"] == "textual_inversion"
  assert retrieval["difference"] == pytest.approx(-3.0) and retrieval["verdict"] == "reversed"
  paragraph = findings.summary_paragraph(findings.check_findings(_rows(table)))
  assert "It reverses: Retrieval beats every diffusion-model method (Sec. 4.3): Retrieval (60.0 ± 0.1) vs" in paragraph
  assert "difference -3.0 ± 0.1 (paper +1.4 ± 0.2)" in paragraph


def test_ablations_are_no_candidates_and_missing_methods_are_not_run():
  ablation = next(m for m in METHODS if m.ablation_of and m.family == "personalization")
  rows = _rows({**{k: PAPER[k] for k in ("baseline_10pct", "simple_prompt", "clip_prompts")}, ablation.name: (90.0, 0.1)})
  checked = findings.check_findings(rows)
  assert [f["verdict"] for f in checked] == ["reproduced", "not run", "not run", "not run"]
  paragraph = findings.summary_paragraph(checked)
  assert paragraph.startswith("Of the paper's 4 Table 1 findings, this run tests 1. It reproduces: Simple prompts")
  assert "It does not run the methods of: Personalizing" in paragraph


def test_figure6_finding_compares_the_medians():
  improvements = {"Retrieval": {"a": 3.0, "b": -1.0, "c": 2.0}, "Pseudoword + DM": {"a": 1.0, "b": 2.0, "c": -4.0}}
  result = findings.figure6_finding(improvements, "Retrieval", "Pseudoword + DM")
  assert result["median_improvement"] == {"Retrieval": 2.0, "Pseudoword + DM": 1.0} and result["holds"]
  assert result["fraction_of_classes_improved"] == {
    "Retrieval": pytest.approx(2 / 3),
    "Pseudoword + DM": pytest.approx(2 / 3),
  }
  flipped = findings.figure6_finding(improvements, "Pseudoword + DM", "Retrieval")
  assert not flipped["holds"]


def test_report_states_the_findings(tmp_path):
  runs = [
    {"method": name, "resample": r, "top1": mean + sign * se, "per_class_top1": {"n01440764": mean + sign * se}}
    for name, (mean, se) in PAPER.items()
    for r, sign in enumerate((-1, 1))
  ]
  paths = report.write_report(tmp_path / "report", runs=runs, methods=METHODS, eval_split="val", tiny=False)
  written = json.loads(paths["findings.json"].read_text())
  assert [f["verdict"] for f in written["table1"]] == ["reproduced", "not resolved", "reproduced", "reproduced"]
  # One class: retrieval +5.4 over the subset, pseudoword + DM +4.0.
  assert written["figure6"]["median_improvement"] == {"Retrieval": pytest.approx(5.4), "Pseudoword+DM": pytest.approx(4.0)}
  text = paths["report.md"].read_text()
  assert "## What this run reproduces of the paper" in text
  assert "It cannot resolve (difference within 2 standard errors): Personalizing" in text
  assert "(Figure 6): holds (median per-class change +5.4 for Retrieval vs +4.0 for Pseudoword+DM" in text


def test_rows_without_the_papers_numbers_are_judged_without_a_paper_side():
  # A dataset of the user's own (jax_aug.data.classes) has no paper numbers: the rows carry None.
  rows = [dict(r, paper_top1_mean=None, paper_top1_standard_error=None) for r in _rows(PAPER)]
  checked = findings.check_findings(rows)
  assert [f["verdict"] for f in checked] == ["reproduced", "not resolved", "reproduced", "reproduced"]
  assert all("paper" not in f for f in checked)
  assert "(paper" not in findings.summary_paragraph(checked)
