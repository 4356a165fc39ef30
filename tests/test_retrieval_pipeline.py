"""The retrieval pipeline on a constructed index: k grows along the paper's schedule, filters drop what
they should, a class that never fills is excluded with a reason, and a killed run resumes to the same
set without fetching anything twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import retrieval_support as case
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jax_aug.data.augmentation_set import load_augmentation_set
from jax_aug.data.subsets import load_exclusions
from jax_aug.io import JsonlManifest
from jax_aug.metrics import TENSORBOARD_DIR
from jax_aug.retrieval.pipeline import run_retrieval

TESTS = Path(__file__).resolve().parent


def _rows(augmentation_dir: Path) -> list[dict]:
  rows = load_augmentation_set(augmentation_dir)
  for row in rows:
    row["pixels"] = np.asarray(__import__("PIL.Image").Image.open(row.pop("path"))).tolist()
  return sorted(rows, key=lambda r: r["key"])


def test_gradual_k_grows_to_the_cap_and_excludes_with_a_reason(tmp_path):
  index, images = case.build_case(tmp_path / "case")
  config = case.case_config(index, images)
  calls = []
  out = run_retrieval(config, tmp_path / "run", case.case_components(config, calls=calls))
  # A: 7 neighbours hold only 3 survivors (0, 3, 5), so k rises once to 14. B: all six steps, up to the
  # cap 6 x 1.4 x 5 = 42, without reaching 5 survivors.
  assert [k for q, k in calls if q == 0] == [7, 14]
  assert [k for q, k in calls if q == 1] == [7, 14, 21, 28, 35, 42]
  rows = load_augmentation_set(out)
  assert [r["index_id"] for r in sorted(rows, key=lambda r: r["key"])] == case.A_EXPECTED
  assert {r["wnid"] for r in rows} == {case.CLASS_A}
  first = min(rows, key=lambda r: r["key"])
  assert first["key"] == f"{case.CLASS_A}_000000" and first["caption"] == "candidate 0"
  assert first["url"] == "http://unused.invalid/0.jpg" and first["aesthetic"] == 6.5 and first["k"] == 14
  assert first["similarity"] == pytest.approx(np.cos(0.01) / np.sqrt(1 + 0.05**2), abs=1e-5)
  excluded = load_exclusions(tmp_path / "run" / "excluded_classes.json")
  assert list(excluded) == [case.CLASS_B]
  assert "only 3 of 5 images" in excluded[case.CLASS_B] and "k=42" in excluded[case.CLASS_B]
  # Every drop is recorded with its reason; metadata-filtered candidates were never fetched.
  records = {(r["wnid"], r["id"]): r for r in JsonlManifest(tmp_path / "run" / "candidates.jsonl").read()}
  assert "safety checker" in records[(case.CLASS_A, 6)]["reason"]
  assert records[(case.CLASS_A, 7)]["reason"].startswith("failed_to_download")
  assert (case.CLASS_A, 1) not in records and (case.CLASS_A, 2) not in records
  assert sorted(i for w, i in records if w == case.CLASS_B) == sorted(case.B_GOOD)
  metrics = JsonlManifest(tmp_path / "run" / "metrics.jsonl").read()
  assert [m["k"] for m in metrics if m["event"] == "k_step" and m["wnid"] == case.CLASS_B] == [7, 14, 21, 28, 35, 42]
  # TensorBoard: each row's numbers as "<event>/<field>" at the row's line in metrics.jsonl.
  events = EventAccumulator(str(tmp_path / "run" / TENSORBOARD_DIR))
  events.Reload()
  assert [(e.step, e.value) for e in events.Scalars("k_step/survivors")] == [
    (line, m["survivors"]) for line, m in enumerate(metrics) if m["event"] == "k_step"
  ]
  # A finished run is not redone.
  calls.clear()
  run_retrieval(config, tmp_path / "run", case.case_components(config, calls=calls))
  assert calls == []


def test_bad_aesthetic_setup_fails_clearly(tmp_path):
  index, images = case.build_case(tmp_path / "case")
  config = case.case_config(index, images)
  config.filters.aesthetic_column = "no_such_column"
  with pytest.raises(ValueError, match="'no_such_column' column value and no aesthetic predictor"):
    run_retrieval(config, tmp_path / "run", case.case_components(config))


_RUN = """
import sys
sys.path.insert(0, {tests!r})
import retrieval_support as case
from pathlib import Path
from jax_aug.retrieval.pipeline import run_retrieval
config = case.case_config(Path({index!r}), Path({images!r}))
run_retrieval(config, Path({workdir!r}), case.case_components(config, delay_s={delay}))
"""


def _start(index, images, workdir, delay):
  code = textwrap.dedent(
    _RUN.format(tests=str(TESTS), index=str(index), images=str(images), workdir=str(workdir), delay=delay)
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(TESTS.parent))
  return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_killed_run_resumes_without_refetching_and_equals_an_uninterrupted_run(tmp_path):
  index, images = case.build_case(tmp_path / "case")
  config = case.case_config(index, images)
  run_retrieval(config, tmp_path / "reference", case.case_components(config))

  workdir = tmp_path / "killed"
  proc = _start(index, images, workdir, delay=0.5)  # slow safety checks: time to kill mid-run
  manifest = JsonlManifest(workdir / "candidates.jsonl")
  deadline = time.monotonic() + 120
  while len(manifest.read()) < 4:
    assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
    assert time.monotonic() < deadline, "the run made no progress"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  fetched = manifest.read()
  assert not (workdir / "classes.jsonl").exists() or len(JsonlManifest(workdir / "classes.jsonl").read()) < 2
  # Remove the source of every candidate already fetched: a rerun that fetched one again would lose it.
  for record in fetched:
    (images / f"{record['id']:03d}.png").unlink(missing_ok=True)
  run_retrieval(config, workdir, case.case_components(config))

  assert _rows(workdir / "augmentation_set") == _rows(tmp_path / "reference" / "augmentation_set")
  assert load_exclusions(workdir / "excluded_classes.json") == load_exclusions(
    tmp_path / "reference" / "excluded_classes.json"
  )
  ids = [(r["wnid"], r["id"]) for r in manifest.read()]
  assert len(ids) == len(set(ids)), "a candidate was fetched twice"
  reference = JsonlManifest(tmp_path / "reference" / "candidates.jsonl").read()
  assert sorted(map(json.dumps, manifest.read())) == sorted(map(json.dumps, reference))


@pytest.mark.slow  # two img2dataset calls (each spawns its processes) and a second pass
def test_url_downloads_in_the_pipeline_are_never_repeated(tmp_path):
  import pyarrow.parquet as pq
  from retrieval_support import http_server

  index, images = case.build_case(tmp_path / "case")
  routes = {f"/{int(p.stem)}.jpg": (200, p.read_bytes(), 0.0) for p in images.glob("*.png")}
  with http_server(routes) as (base, counts):
    # Point the index's urls at the local server: same rows, url column rewritten.
    table = pq.read_table(index / "metadata" / "00000.parquet")
    urls = [u.replace("http://unused.invalid", base) for u in table.column("url").to_pylist()]
    pq.write_table(
      table.set_column(table.schema.get_field_index("url"), "url", [urls]), index / "metadata" / "00000.parquet"
    )
    config = case.case_config(index, images)
    config.classes = (case.CLASS_A,)
    config.download.source = "url"
    config.download.chunk_size = 20
    config.download.timeout_s = 5
    out = run_retrieval(config, tmp_path / "run", case.case_components(config))
    assert [r["index_id"] for r in sorted(load_augmentation_set(out), key=lambda r: r["key"])] == case.A_EXPECTED
    requested = dict(counts)
    fetches = [m for m in JsonlManifest(tmp_path / "run" / "metrics.jsonl").read() if m["event"] == "fetch"]
    assert sum(m.get("failed_to_download", 0) for m in fetches) == 1  # the 404, counted
    assert sum(m.get("safety_checker", 0) for m in fetches) == 1 and sum(m.get("kept", 0) for m in fetches) == 5
    assert set(requested) == {f"/{i}.jpg" for i in (0, 3, 5, 6, 7, 8, 9)}  # 7 has no file: a 404
    # Forget that the class finished: the rerun queries again but downloads nothing it already has.
    (tmp_path / "run" / "classes.jsonl").unlink()
    run_retrieval(config, tmp_path / "run", case.case_components(config))
    assert dict(counts) == requested
