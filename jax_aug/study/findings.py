"""The paper's findings, checked on a run's Table 1 and Figure 6 (the report's "What this run reproduces").

Each finding of the paper compares two numbers of Table 1: a named method, or the best (non-ablation) method of a
family as in the paper's Figure 1, against another. On the run, the difference of the two means is judged
against its standard error (the two rows' standard errors combined, the rows being independent runs):
"reproduced" when it has the paper's sign and exceeds RESOLUTION standard errors, "reversed" when it has the
other sign by as much, "not resolved" otherwise, and "not run" when the run lacks either side. Figure 6's
finding (retrieval's per-class improvements lie to the right of the best DM method's) compares the medians
of the two distributions, which carry no standard error here: it is stated with its numbers, "holds" or not.
Pure functions; `jax_aug.study.report` renders them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from jax_aug.study import methods as methods_lib

# A difference counts as resolved beyond this many standard errors of the difference (about 95% two-sided).
RESOLUTION = 2.0
BEST_DM = "best:DM"  # the best method of any DM family


@dataclasses.dataclass(frozen=True)
class Finding:
  claim: str  # the paper's finding, as the report states it
  higher: str  # a method name, "best:<family>" or BEST_DM: the side the paper found higher
  lower: str


FINDINGS = (
  Finding("Simple prompts improve over the 10% subset alone (Sec. 4.1)", "simple_prompt", methods_lib.BASELINE),
  Finding(
    "Personalizing the diffusion model beats the best prompting strategy (Sec. 4.2, Figure 1)",
    "best:personalization",
    "best:prompt",
  ),
  Finding("Retrieval beats every diffusion-model method (Sec. 4.3)", "retrieval", BEST_DM),
  Finding("Retrieval stays below the 20% upper bound (Sec. 4.3)", "baseline_20pct", "retrieval"),
)


def _pick(rows: Sequence[Mapping], selector: str, key: str) -> Mapping | None:
  """The row `selector` names; for a best-of selector, the candidate with the highest `key` (ours or the
  paper's mean, so each side picks its own best, as each Figure 1 does)."""
  if not selector.startswith("best:"):  # a dataset's own methods may have no paper number
    return next((r for r in rows if r["method"] == selector and r[key] is not None), None)
  families = methods_lib.DM_FAMILIES if selector == BEST_DM else (selector.removeprefix("best:"),)
  candidates = [r for r in rows if r["family"] in families and not r["ablation"] and r[key] is not None]
  return max(candidates, key=lambda r: r[key]) if candidates else None


def verdict(difference: float, standard_error: float, resolution: float = RESOLUTION) -> str:
  """`difference` = (the side the paper found higher) - (the other), judged against its standard error (NaN
  where a side has a single run: no error estimate, nothing resolved)."""
  if not math.isfinite(standard_error) or abs(difference) <= resolution * standard_error:
    return "not resolved"
  return "reproduced" if difference > 0 else "reversed"


def check_findings(rows: Sequence[Mapping]) -> list[dict]:
  """Each of FINDINGS on Table 1's `rows` (`jax_aug.study.report.table1_rows`): the methods compared on each side,
  our means and standard errors, the difference and its standard error, the verdict, and the paper's numbers
  for the same comparison."""
  results = []
  for finding in FINDINGS:
    higher, lower = _pick(rows, finding.higher, "top1_mean"), _pick(rows, finding.lower, "top1_mean")
    paper_higher, paper_lower = _pick(rows, finding.higher, "paper_top1_mean"), _pick(rows, finding.lower, "paper_top1_mean")
    result = {"claim": finding.claim, "verdict": "not run"}
    if paper_higher and paper_lower:
      paper_difference = paper_higher["paper_top1_mean"] - paper_lower["paper_top1_mean"]
      paper_se = math.hypot(paper_higher["paper_top1_standard_error"], paper_lower["paper_top1_standard_error"])
      result["paper"] = {
        "higher": paper_higher["method"],
        "lower": paper_lower["method"],
        "difference": paper_difference,
        "difference_standard_error": paper_se,
        "verdict": verdict(paper_difference, paper_se),  # the paper's own numbers, judged by the same rule
      }
    if higher and lower and higher["method"] != lower["method"]:
      difference = higher["top1_mean"] - lower["top1_mean"]
      se = math.hypot(higher["top1_standard_error"], lower["top1_standard_error"])
      result.update(
        higher={k: higher[k] for k in ("method", "display", "top1_mean", "top1_standard_error")},
        lower={k: lower[k] for k in ("method", "display", "top1_mean", "top1_standard_error")},
        difference=difference,
        difference_standard_error=se,
        verdict=verdict(difference, se),
      )
    results.append(result)
  return results


def figure6_finding(improvements: Mapping[str, Mapping[str, float]], retrieval: str, best_dm: str) -> dict:
  """Figure 6's finding on per-class improvements over the subset ({label: {wnid: points}}): retrieval's median
  above the best DM method's, and the fraction of classes each improves."""
  medians = {label: float(np.median(list(improvements[label].values()))) for label in (retrieval, best_dm)}
  improved = {label: sum(v > 0 for v in improvements[label].values()) / len(improvements[label]) for label in medians}
  return {
    "claim": "Retrieval's per-class improvements lie to the right of the best DM method's (Figure 6)",
    "median_improvement": medians,
    "fraction_of_classes_improved": improved,
    "holds": medians[retrieval] > medians[best_dm],
  }


def _side(side: Mapping) -> str:
  return f"{side['display']} ({side['top1_mean']:.1f} ± {side['top1_standard_error']:.1f})"


def summary_paragraph(findings: Sequence[Mapping], figure6: Mapping | None = None) -> str:
  """One paragraph: which of the paper's findings this run reproduces, which it reverses, which its noise
  cannot resolve, with the numbers behind each."""
  groups: dict[str, list[str]] = {"reproduced": [], "reversed": [], "not resolved": [], "not run": []}
  for f in findings:
    if f["verdict"] == "not run":
      groups["not run"].append(f["claim"])
      continue
    groups[f["verdict"]].append(
      f"{f['claim']}: {_side(f['higher'])} vs {_side(f['lower'])}, difference {f['difference']:+.1f} ±"
      f" {f['difference_standard_error']:.1f}"
      + (f" (paper {f['paper']['difference']:+.1f} ± {f['paper']['difference_standard_error']:.1f})" if "paper" in f else "")
    )
  tested = sum(len(v) for k, v in groups.items() if k != "not run")
  sentences = [f"Of the paper's {len(findings)} Table 1 findings, this run tests {tested}."]
  labels = {
    "reproduced": "It reproduces",
    "reversed": "It reverses",
    "not resolved": f"It cannot resolve (difference within {RESOLUTION:g} standard errors)",
    "not run": "It does not run the methods of",
  }
  for key, label in labels.items():
    if groups[key]:
      sentences.append(f"{label}: " + "; ".join(groups[key]) + ".")
  if figure6:
    (retrieval, best_dm), medians = list(figure6["median_improvement"]), figure6["median_improvement"]
    fractions = figure6["fraction_of_classes_improved"]
    sentences.append(
      f"{figure6['claim']}: {'holds' if figure6['holds'] else 'does not hold'} (median per-class change"
      f" {medians[retrieval]:+.1f} for {retrieval} vs {medians[best_dm]:+.1f} for {best_dm}; classes improved"
      f" {fractions[retrieval]:.0%} vs {fractions[best_dm]:.0%})."
    )
  return " ".join(sentences)
