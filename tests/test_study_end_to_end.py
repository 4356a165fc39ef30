"""The reduced tiny study (10% baseline + simple prompt + retrieval) end to end through run_study.py, and
the same study killed midway and rerun: finished stages are not redone and the report is the same."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = ["baseline_10pct", "simple_prompt", "retrieval"]
REPORT_FILES = (
  "report.md",
  "table1.md",
  "table1.csv",
  "runs.json",
  "figure6.png",
  "figure6.json",
  "figure5_subset.png",
  "figure5_simple_prompt.png",
  "figure5_retrieval.png",
  "figure1.png",
  "figure5.png",
  "figure6_examples.png",
  "protocol.json",
)


def _command(workdir: Path, cache: Path) -> list[str]:
  return [
    sys.executable,
    "run_study.py",
    "--config=configs/tiny.py",
    f"--workdir={workdir}",
    f"--config.methods={','.join(METHODS)}",
    f"--config.compilation_cache_dir={cache}",
  ]


def _env() -> dict:
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
  return env


def _run_to_end(workdir: Path, cache: Path) -> str:
  proc = subprocess.run(_command(workdir, cache), cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, f"run_study.py failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
  return proc.stdout


def _records(workdir: Path) -> dict[str, dict]:
  root = workdir / "stages"
  return {str(p.relative_to(root).with_suffix("")): json.loads(p.read_text()) for p in root.rglob("*.json")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("study") / "uninterrupted"
  cache = tmp_path_factory.mktemp("jax_cache")
  stdout = _run_to_end(workdir, cache)
  return workdir, cache, stdout


@pytest.mark.slow
def test_reduced_tiny_study_writes_a_correct_report(uninterrupted):
  workdir, _, stdout = uninterrupted
  report = workdir / "report"
  for name in REPORT_FILES:
    assert (report / name).is_file(), f"missing report file {name}"
  # One line per stage, the time summary and where the report is.
  assert "train/retrieval/r1: done in" in stdout
  assert "time per stage" in stdout and f"report: {report / 'report.md'}" in stdout

  with open(report / "table1.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["method"] for r in rows] == METHODS
  markdown = (report / "report.md").read_text()
  assert "tiny random-init models" in markdown
  assert "standard error of the mean" in markdown and "std / sqrt(n), ddof=1" in markdown
  for row in rows:
    # The raw numbers: each classifier's own results file, not the report's JSON.
    top1 = [
      json.loads((workdir / "train" / row["method"] / f"r{r}" / "classifier" / "results.json").read_text())["top1"]
      for r in range(2)
    ]
    n = len(top1)
    mean = sum(top1) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in top1) / (n - 1)) / math.sqrt(n)
    assert int(row["n"]) == n == 2
    assert float(row["top1_mean"]) == pytest.approx(mean, abs=1e-9)
    assert float(row["top1_standard_error"]) == pytest.approx(se, abs=1e-9)
    paper_mean, paper_se = float(row["paper_top1_mean"]), float(row["paper_top1_standard_error"])
    assert float(row["difference_to_paper"]) == pytest.approx(mean - paper_mean, abs=1e-9)
    assert (
      f"| {row['display']} | {row['family']} | {mean:.1f} ± {se:.1f} | {paper_mean:.1f} ± {paper_se:.1f} |"
      f" {mean - paper_mean:+.1f} | 2 |"
    ) in markdown
    assert 0.0 <= mean <= 100.0

  runs = json.loads((report / "runs.json").read_text())["runs"]
  assert sorted((r["method"], r["resample"]) for r in runs) == sorted((m, r) for m in METHODS for r in range(2))
  for name in REPORT_FILES:
    if name.endswith(".png"):
      with Image.open(report / name) as image:
        image.load()
        assert min(image.size) > 50


@pytest.mark.slow
def test_killed_study_resumes_without_redoing_finished_stages(uninterrupted, tmp_path):
  reference, cache, _ = uninterrupted
  workdir = tmp_path / "killed"
  proc = subprocess.Popen(
    _command(workdir, cache), cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  target = workdir / "stages" / "train" / "simple_prompt" / "r0.json"
  deadline = time.time() + 600
  try:
    while not target.exists() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.2)
    time.sleep(1.0)  # into the classifier's training, not at a stage boundary
    assert proc.poll() is None, "the study finished (or failed) before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  before = _records(workdir)
  done_before = {name for name, r in before.items() if r["state"] == "done"}
  assert {"data", "retrieval", "augment/simple_prompt", "train/baseline_10pct/r0"} <= done_before
  assert "report" not in done_before

  stdout = _run_to_end(workdir, cache)
  after = _records(workdir)
  for name in done_before:
    assert after[name] == before[name], f"finished stage {name} was run again"
    assert f"{name}: done earlier" in stdout
  assert all(r["state"] == "done" for r in after.values())
  for name in REPORT_FILES:
    assert (workdir / "report" / name).read_bytes() == (reference / "report" / name).read_bytes(), name

  # A change that leaves the classifiers' results as they are (how often a resumable checkpoint is written) is
  # refused for the finished runs; adopted, nothing is trained again, and the report, when next written (here:
  # asked to, with fewer Figure 5 images), lists the adoptions.
  changed = ["--config.classifier.checkpoint_every_epochs=3"]
  refused = subprocess.run(_command(workdir, cache) + changed, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True)
  assert refused.returncode != 0 and "classifier.checkpoint_every_epochs: 1 -> 3" in refused.stderr
  assert "--config.adopt=" in refused.stderr
  adopt = ["--config.adopt=train/*", "--config.report.figure5_images_per_class=2", "--config.redo=report"]
  proc = subprocess.run(
    _command(workdir, cache) + changed + adopt, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=900
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  adopted = _records(workdir)
  trained = [name for name in after if name.startswith("train/")]
  for name in trained:
    assert f"{name}: adopted under the changed config" in proc.stdout
    assert adopted[name]["seconds"] == after[name]["seconds"] and adopted[name]["state"] == "done"
  for name in REPORT_FILES:
    if name != "report.md" and not name.startswith("figure5"):  # the results, not the example grids
      assert (workdir / "report" / name).read_bytes() == (reference / "report" / name).read_bytes(), name
  notes = (workdir / "report" / "report.md").read_text().split("## Notes")[1]
  for name in trained:
    assert f"Stage {name} was kept under a changed config (config.adopt" in notes
  assert notes.count("classifier.checkpoint_every_epochs: 1 -> 3") == len(trained)
