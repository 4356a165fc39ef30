"""Stage records: skip finished stages, resume unfinished ones, refuse a changed config unless asked."""

import json
import time

import pytest

from jax_aug.study import stages


def _runner(tmp_path, redo=(), adopt=()):
  return stages.StageRunner(tmp_path, redo=redo, adopt=adopt, log=lambda line: None)


def _writer(calls, name, text):
  def fn(out):
    calls.append(name)
    (out / "out.txt").write_text(text)

  return fn


def test_fingerprint_ignores_key_order_and_sees_values():
  a = stages.fingerprint({"x": 1, "y": {"a": 2, "b": [1, 2]}})
  b = stages.fingerprint({"y": {"b": [1, 2], "a": 2}, "x": 1})
  assert a == b
  assert stages.fingerprint({"x": 2, "y": {"a": 2, "b": [1, 2]}}) != a
  assert stages.fingerprint({"x": 1, "y": {"a": 2, "b": [1, 2]}}, {"up": "f"}) != a


def test_finished_stage_is_skipped(tmp_path):
  calls = []
  _runner(tmp_path).run("subsets", {"seed": 0}, _writer(calls, "subsets", "a"))
  record = json.loads((tmp_path / "stages" / "subsets.json").read_text())
  assert record["state"] == "done" and record["attempts"] == 1
  runner = _runner(tmp_path)
  runner.run("subsets", {"seed": 0}, _writer(calls, "subsets", "b"))
  assert calls == ["subsets"]
  assert (tmp_path / "subsets" / "out.txt").read_text() == "a"
  assert [o.status for o in runner.outcomes] == ["skipped"]


def test_unfinished_stage_is_resumed_in_place(tmp_path):
  def crash(out):
    (out / "partial.txt").write_text("half")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    _runner(tmp_path).run("train/m/r0", {"epochs": 3}, crash)
  assert json.loads((tmp_path / "stages" / "train" / "m" / "r0.json").read_text())["state"] == "running"
  seen = []
  runner = _runner(tmp_path)
  runner.run("train/m/r0", {"epochs": 3}, lambda out: seen.append((out / "partial.txt").read_text()))
  assert seen == ["half"]  # the stage's own job finds its partial output to resume from
  assert runner.outcomes[0].status == "resumed"
  assert json.loads((tmp_path / "stages" / "train" / "m" / "r0.json").read_text())["attempts"] == 2


def test_an_interrupted_attempt_keeps_its_time_for_the_resumed_one(tmp_path):
  path = tmp_path / "stages" / "select" / "m.json"

  def killed_later(out):
    # While the stage runs, its record on disk (all a SIGKILL leaves) already holds the time spent so far.
    deadline = time.monotonic() + 30
    while json.loads(path.read_text())["seconds"] < 0.2 and time.monotonic() < deadline:
      time.sleep(0.01)
    assert json.loads(path.read_text())["state"] == "running"
    assert json.loads(path.read_text())["seconds"] >= 0.2
    raise KeyboardInterrupt

  runner = stages.StageRunner(tmp_path, log=lambda line: None, heartbeat_seconds=0.02)
  started = time.perf_counter()
  with pytest.raises(KeyboardInterrupt):
    runner.run("select/m", {"k": 1}, killed_later)
  first = json.loads(path.read_text())
  assert first["state"] == "running" and first["attempts"] == 1
  assert 0.2 <= first["seconds"] <= time.perf_counter() - started

  lines = []
  resumed = stages.StageRunner(tmp_path, log=lines.append)
  resumed.run("select/m", {"k": 1}, lambda out: time.sleep(0.05))
  done = json.loads(path.read_text())
  assert done["state"] == "done" and done["attempts"] == 2
  # The total is the interrupted attempt's time plus this one's, as the summary reports it.
  assert done["seconds"] == pytest.approx(first["seconds"] + resumed.outcomes[0].seconds, abs=1e-9)
  assert resumed.outcomes[0].seconds >= 0.05
  assert f"resuming ({first['seconds']:.1f} s in 1 earlier attempt(s))" in lines[0]


def test_changed_config_is_refused_with_the_changed_field_and_nothing_is_lost(tmp_path):
  calls = []
  _runner(tmp_path).run("train/m/r0", {"classifier": {"epochs": 3, "lr": 0.1}}, _writer(calls, "1", "first"))
  with pytest.raises(stages.StageConfigChanged) as info:
    _runner(tmp_path).run("train/m/r0", {"classifier": {"epochs": 5, "lr": 0.1}}, _writer(calls, "2", "second"))
  message = str(info.value)
  assert "classifier.epochs: 3 -> 5" in message and "--config.redo=train/m/r0" in message
  assert "--config.adopt=train/m/r0" in message
  assert "lr" not in message
  assert calls == ["1"]
  assert (tmp_path / "train" / "m" / "r0" / "out.txt").read_text() == "first"


def test_changed_config_of_an_unfinished_stage_is_refused_too(tmp_path):
  def crash(out):
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError):
    _runner(tmp_path).run("subsets", {"seed": 0}, crash)
  with pytest.raises(stages.StageConfigChanged, match="started under a different config"):
    _runner(tmp_path).run("subsets", {"seed": 1}, lambda out: None)


def test_redo_pattern_moves_old_output_aside_and_reruns(tmp_path):
  calls = []
  _runner(tmp_path).run("train/m/r0", {"epochs": 3}, _writer(calls, "1", "first"))
  runner = _runner(tmp_path, redo=["train/*"])
  runner.run("train/m/r0", {"epochs": 5}, lambda out: calls.append(sorted(p.name for p in out.iterdir())))
  assert calls == ["1", []]  # ran again in an empty directory
  superseded = list((tmp_path / "_superseded").iterdir())
  assert len(superseded) == 1
  assert (superseded[0] / "output" / "out.txt").read_text() == "first"
  assert json.loads((superseded[0] / "record.json").read_text())["config"] == {"epochs": 3}
  assert runner.outcomes[0].status == "redone"


def test_redo_of_upstream_cascades_to_downstream_only(tmp_path):
  calls = []
  runner = _runner(tmp_path)
  runner.run("subsets", {"seed": 0}, _writer(calls, "subsets", "s"))
  runner.run("resample/m", {"n": 2}, _writer(calls, "resample", "r"), upstream=["subsets"])
  runner.run("other", {"k": 1}, _writer(calls, "other", "o"))
  calls.clear()
  runner = _runner(tmp_path, redo=["subsets"])
  runner.run("subsets", {"seed": 1}, _writer(calls, "subsets", "s"))
  runner.run("resample/m", {"n": 2}, _writer(calls, "resample", "r"), upstream=["subsets"])
  runner.run("other", {"k": 1}, _writer(calls, "other", "o"))
  assert calls == ["subsets", "resample"]
  # A rerun after the cascade is a no-op.
  calls.clear()
  runner = _runner(tmp_path)
  runner.run("subsets", {"seed": 1}, _writer(calls, "subsets", "s"))
  runner.run("resample/m", {"n": 2}, _writer(calls, "resample", "r"), upstream=["subsets"])
  assert calls == []


# subsets -> augment/m -> train/m/r0 -> report, before and after a code update added a field to augment/m's config
# and to the classifier block, both at their old behaviour.
STUDY = [
  ("subsets", {"seed": 0}, []),
  ("augment/m", {"n": 2}, ["subsets"]),
  ("train/m/r0", {"classifier": {"epochs": 3}}, ["augment/m"]),
  ("report", {}, ["train/m/r0"]),
]
STUDY_WITH_NEW_FIELDS = [
  ("subsets", {"seed": 0}, []),
  ("augment/m", {"n": 2, "n_new": 0}, ["subsets"]),
  ("train/m/r0", {"classifier": {"epochs": 3, "jitter": None}}, ["augment/m"]),
  ("report", {}, ["train/m/r0"]),
]


def _run(runner, calls, study):
  for name, config, upstream in study:
    runner.run(name, config, _writer(calls, name, f"{name} output"), upstream=upstream)
  return runner


def test_adopted_stage_keeps_its_output_and_its_downstream_under_the_new_config(tmp_path):
  calls = []
  _run(_runner(tmp_path), calls, STUDY)
  calls.clear()
  with pytest.raises(stages.StageConfigChanged, match=r"n_new: added \(0\)"):
    _run(_runner(tmp_path), calls, STUDY_WITH_NEW_FIELDS)
  assert calls == []

  runner = _run(_runner(tmp_path, adopt=["augment/*", "train/*"]), calls, STUDY_WITH_NEW_FIELDS)
  assert calls == []  # nothing ran again: two stages adopted, the others kept as they were
  assert [o.status for o in runner.outcomes] == ["skipped", "adopted", "adopted", "skipped"]
  for name, _, _ in STUDY:
    assert (tmp_path / name / "out.txt").read_text() == f"{name} output"
  record = json.loads((tmp_path / "stages" / "train" / "m" / "r0.json").read_text())
  assert record["state"] == "done" and record["config"] == {"classifier": {"epochs": 3, "jitter": None}}
  assert [a["changes"] for a in record["adopted"]] == [["classifier.jitter: added (null)"]]
  # What the report's notes list, in stage-name order.
  assert [(name, a["changes"]) for name, a in stages.adoptions(tmp_path)] == [
    ("augment/m", ["n_new: added (0)"]),
    ("train/m/r0", ["classifier.jitter: added (null)"]),
  ]
  # Later runs under the new config skip every stage without being asked; the old config is now a change.
  again = _run(_runner(tmp_path), calls, STUDY_WITH_NEW_FIELDS)
  assert calls == [] and [o.status for o in again.outcomes] == ["skipped"] * 4
  with pytest.raises(stages.StageConfigChanged, match=r"n_new: removed \(was 0\)"):
    _run(_runner(tmp_path), calls, STUDY)


def test_adopt_does_not_cover_a_redone_upstream_nor_a_stage_also_asked_to_redo(tmp_path):
  calls = []
  _run(_runner(tmp_path), calls, STUDY)
  runner = _runner(tmp_path, redo=["subsets"], adopt=["augment/*"])
  runner.run("subsets", {"seed": 1}, _writer(calls, "subsets", "new subsets"))
  with pytest.raises(stages.StageConfigChanged, match=r"cannot be adopted .* were redone since \(subsets\)"):
    runner.run("augment/m", {"n": 2, "n_new": 0}, _writer(calls, "augment/m", "x"), upstream=["subsets"])
  assert (tmp_path / "augment" / "m" / "out.txt").read_text() == "augment/m output"
  with pytest.raises(ValueError, match="matches both config.redo and config.adopt"):
    _runner(tmp_path, redo=["train/*"], adopt=["train/m/*"]).run("train/m/r0", {}, lambda out: None)


def test_upstream_must_run_first_and_names_are_checked(tmp_path):
  with pytest.raises(KeyError, match="'subsets' has not been run"):
    _runner(tmp_path).run("resample/m", {}, lambda out: None, upstream=["subsets"])
  for bad in ("../x", "a//b", "", "a/./b", "a b"):
    with pytest.raises(ValueError, match="bad stage name"):
      _runner(tmp_path).run(bad, {}, lambda out: None)


def test_summary_lists_every_stage_with_its_time(tmp_path):
  runner = _runner(tmp_path)
  runner.run("a", {}, lambda out: None)
  runner.run("b", {}, lambda out: None)
  summary = runner.summary()
  assert "a " in summary and "b " in summary and "total" in summary


def test_only_the_writer_records_and_every_stage_ends_at_a_barrier(tmp_path):
  events = []
  reader = stages.StageRunner(tmp_path, log=lambda line: None, is_writer=False, barrier=events.append)
  reader.run("data", {}, lambda out: events.append("fn"))
  assert events == ["fn", "stage data"]
  assert not (tmp_path / "stages").exists()
  writer = stages.StageRunner(tmp_path, log=lambda line: None, barrier=events.append)
  writer.run("data", {}, lambda out: events.append("fn"))
  assert json.loads((tmp_path / "stages" / "data.json").read_text())["state"] == "done"
