"""Stage records: what the study has finished, under which config, so a rerun skips, resumes or refuses.

Every stage (build the subsets, sample one method, train one classifier, ...) owns a directory
`<workdir>/<name>` and a record `<workdir>/stages/<name>.json` written atomically:

  {"name", "fingerprint", "config", "upstream", "state": "running" | "done", "seconds", "attempts", ...}

`seconds` is the time spent in the stage over all its attempts. A running stage rewrites its record every
`heartbeat_seconds` and when it stops on an exception or Ctrl-C, so an attempt that was killed or preempted
keeps its time (up to the last heartbeat) in the total its resumed attempt adds to.

The fingerprint hashes the stage's own config together with the fingerprints of the stages it reads from,
so a changed config anywhere upstream shows up downstream too. On a rerun a stage is

  - skipped when it is done under the same fingerprint;
  - resumed when it started under the same fingerprint but never finished (the stage's own job skips the
    items its manifests list);
  - refused (`StageConfigChanged`, naming the changed fields) when its own config changed, unless a
    `redo` pattern names it: then its old directory is moved to `<workdir>/_superseded/` (never deleted)
    and it runs again from scratch;
  - redone without asking when only an upstream fingerprint changed, i.e. the user already asked to redo
    a stage it reads from: its output was computed from data that no longer exists;
  - adopted when its own config changed and an `adopt` pattern names it: the user vouches that the change
    leaves its output as it is (a field a code update added at its old behaviour, a renamed option). Its
    output is kept, its record takes the new config and lists the change under "adopted", and the stages
    downstream see its old fingerprint (`output_fingerprint`), so they are kept too.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from jax_aug.io import atomic_write_json, read_json

RECORDS_DIR = "stages"
SUPERSEDED_DIR = "_superseded"
HEARTBEAT_SECONDS = 60.0


def comma_separated(value) -> list[str]:
  """The non-empty, stripped items of a comma-separated config string (stage patterns, method names)."""
  return [item.strip() for item in str(value).split(",") if item.strip()]


@dataclasses.dataclass(frozen=True)
class Stage:
  """A stage of the study's plan: its name (= its directory), what it depends on, and the job."""

  name: str
  config: Any  # what the stage's fingerprint covers: exactly the settings its output depends on
  fn: Callable[[Path], None]
  upstream: tuple[str, ...] = ()


class StageConfigChanged(RuntimeError):
  """A finished or started stage is asked to run under a different config."""


def output_fingerprint(record: Mapping) -> str:
  """The fingerprint downstream stages depend on: the config the output was computed under (an adopted
  stage keeps the one from before its adoption)."""
  return record.get("output_fingerprint", record["fingerprint"])


def adoptions(workdir: str | os.PathLike) -> list[tuple[str, dict]]:
  """(stage name, adoption) for every adoption recorded under `workdir`, in stage-name order."""
  records = Path(workdir) / RECORDS_DIR
  found = []
  for path in sorted(records.rglob("*.json")):
    record = read_json(path)
    found.extend((record["name"], adoption) for adoption in record.get("adopted", []))
  return found


@dataclasses.dataclass(frozen=True)
class StageOutcome:
  name: str
  status: str  # "ran", "resumed", "skipped", "redone", "adopted"
  seconds: float  # spent in this invocation


def canonical_config(config: Any) -> Any:
  """A JSON-able, order-independent view of a config (ConfigDict, dict, list, scalar)."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  return json.loads(json.dumps(config, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
  if hasattr(value, "to_dict"):  # a ConfigDict nested in a plain dict
    return value.to_dict()
  if isinstance(value, (set, frozenset)):
    return sorted(value)
  if isinstance(value, os.PathLike):
    return os.fspath(value)
  raise TypeError(f"stage config value {value!r} of type {type(value).__name__} is not JSON-serializable")


def fingerprint(config: Any, upstream: Mapping[str, str] | None = None) -> str:
  payload = json.dumps(
    {"config": canonical_config(config), "upstream": dict(sorted((upstream or {}).items()))}, sort_keys=True
  )
  return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
  """Human-readable differences between two canonical configs, e.g. ['classifier.epochs: 3 -> 5']."""
  if isinstance(old, dict) and isinstance(new, dict):
    lines = []
    for key in sorted(set(old) | set(new)):
      path = f"{prefix}.{key}" if prefix else str(key)
      if key not in old:
        lines.append(f"{path}: added ({json.dumps(new[key])})")
      elif key not in new:
        lines.append(f"{path}: removed (was {json.dumps(old[key])})")
      else:
        lines.extend(config_diff(old[key], new[key], path))
    return lines
  if old != new:
    return [f"{prefix or '<config>'}: {json.dumps(old)} -> {json.dumps(new)}"]
  return []


def validate_stage_name(name: str) -> str:
  parts = name.split("/")
  if not name or any(not p or p in (".", "..") or not all(c.isalnum() or c in "_-." for c in p) for p in parts):
    raise ValueError(f"bad stage name {name!r}: expected '/'-separated parts of [A-Za-z0-9_.-], e.g. 'train/retrieval/r0'")
  return name


class _Heartbeat:
  """Calls `action()` every `seconds` on a background thread while the `with` block runs; stopped (and joined,
  so no call overlaps what follows the block) when it ends."""

  def __init__(self, seconds: float, action: Callable[[], None]):
    self.seconds, self.action = seconds, action
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, name="stage-heartbeat", daemon=True)

  def _beat(self) -> None:
    while not self._stop.wait(self.seconds):
      self.action()

  def __enter__(self) -> None:
    self._thread.start()

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()


class StageRunner:
  """Runs named stages in a workdir, recording completion; see the module docstring for the rules."""

  def __init__(
    self,
    workdir: str | os.PathLike,
    *,
    redo: Iterable[str] = (),
    adopt: Iterable[str] = (),
    log: Callable[[str], None] = print,
    is_writer: bool = True,
    barrier: Callable[[str], None] | None = None,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
  ):
    """Multi-host runs: every process runs every stage (the areas split the work), only `is_writer`
    writes records and moves superseded output, and `barrier(name)` lines all processes up after a
    stage, so none records it done while another is still in it."""
    self.workdir = Path(workdir)
    self.heartbeat_seconds = heartbeat_seconds
    self.redo_patterns = [p for p in redo if p]
    self.adopt_patterns = [p for p in adopt if p]
    self.log = log
    self.is_writer = is_writer
    self.barrier = barrier or (lambda name: None)
    self.outcomes: list[StageOutcome] = []
    self._fingerprints: dict[str, str] = {}

  def record_path(self, name: str) -> Path:
    return self.workdir / RECORDS_DIR / f"{validate_stage_name(name)}.json"

  def stage_dir(self, name: str) -> Path:
    return self.workdir / validate_stage_name(name)

  def read_record(self, name: str) -> dict | None:
    path = self.record_path(name)
    return read_json(path) if path.exists() else None

  def is_done(self, name: str) -> bool:
    record = self.read_record(name)
    return bool(record) and record["state"] == "done"

  def fingerprint_of(self, name: str) -> str:
    """The fingerprint of a stage this runner has run or skipped; upstream stages must come first."""
    if name not in self._fingerprints:
      raise KeyError(f"stage {name!r} has not been run (or skipped) yet, so it cannot be upstream of another")
    return self._fingerprints[name]

  def _asked_to_redo(self, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in self.redo_patterns)

  def _asked_to_adopt(self, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in self.adopt_patterns)

  def run(
    self, name: str, config: Any, fn: Callable[[Path], None], *, upstream: Iterable[str] = (), position: str = ""
  ) -> Path:
    """Runs `fn(stage_dir)` unless the stage is already done under the same config; returns stage_dir."""
    upstream_fps = {u: self.fingerprint_of(u) for u in upstream}
    config = canonical_config(config)
    fp = fingerprint(config, upstream_fps)
    out = self.stage_dir(name)
    record = self.read_record(name)
    label = f"[{position}] {name}" if position else name
    status = "ran"
    if self._asked_to_redo(name) and self._asked_to_adopt(name):
      raise ValueError(f"stage {name!r} matches both config.redo and config.adopt: redo it or keep it, not both")
    kept = "skipped"
    if record is not None and record["fingerprint"] != fp:
      own_changes = config_diff(record["config"], config)
      changed_upstream = sorted(
        u for u in set(record["upstream"]) | set(upstream_fps) if record["upstream"].get(u) != upstream_fps.get(u)
      )
      if own_changes and self._asked_to_adopt(name):
        if changed_upstream:
          raise StageConfigChanged(
            f"stage {name!r} cannot be adopted under its changed config: the stages it reads from were redone"
            f" since ({', '.join(changed_upstream)}), so its output is stale. Pass --config.redo={name} instead."
          )
        record, kept = self._adopt(name, record, fp, config, own_changes), "adopted"
        self.log(f"{label}: adopted under the changed config ({'; '.join(own_changes)}); its output is kept")
      elif own_changes and not self._asked_to_redo(name):
        raise StageConfigChanged(
          f"stage {name!r} {'finished' if record['state'] == 'done' else 'started'} under a different config"
          f" ({'; '.join(own_changes)}). Its output in {out} was kept. Restore the config; or pass"
          f" --config.redo={name} (patterns such as 'train/*' work) to move that output to"
          f" {self.workdir / SUPERSEDED_DIR} and run the stage again; or, if the change leaves its output as it"
          f" is (e.g. a field added by a code update at its old behaviour), --config.adopt={name} to keep it"
          f" under the new config."
        )
      else:
        reason = "config changed, redo asked" if own_changes else "upstream redone: " + ", ".join(changed_upstream)
        self.log(f"{label}: redo ({reason})")
        if self.is_writer:
          self._supersede(name, record)
        self.barrier(f"supersede {name}")
        record, status = None, "redone"
    if record is not None and record["state"] == "done":
      self._fingerprints[name] = output_fingerprint(record)
      self.outcomes.append(StageOutcome(name, kept, 0.0))
      if kept == "skipped":
        self.log(f"{label}: done earlier ({record['seconds']:.1f} s), skipped")
      return out
    elif record is not None:
      status = "resumed"

    previous_seconds = record["seconds"] if record else 0.0
    attempts = (record["attempts"] if record else 0) + 1
    earlier = f" ({previous_seconds:.1f} s in {attempts - 1} earlier attempt(s))" if record else ""
    self.log(f"{label}: {'resuming' if status == 'resumed' else 'running'}{earlier}")
    base = {"name": name, "fingerprint": fp, "config": config, "upstream": upstream_fps, "attempts": attempts}
    base.update({k: record[k] for k in ("output_fingerprint", "adopted") if record and k in record})
    start = time.perf_counter()

    def record_running() -> None:
      if self.is_writer:
        seconds = previous_seconds + time.perf_counter() - start
        atomic_write_json(self.record_path(name), {**base, "state": "running", "seconds": seconds})

    record_running()
    out.mkdir(parents=True, exist_ok=True)
    try:
      with _Heartbeat(self.heartbeat_seconds, record_running):
        fn(out)
    except BaseException:
      record_running()  # the attempt's time stays in the record for the attempt that resumes it
      raise
    self.barrier(f"stage {name}")
    seconds = time.perf_counter() - start
    if self.is_writer:
      atomic_write_json(
        self.record_path(name),
        {
          **base,
          "state": "done",
          "seconds": previous_seconds + seconds,
          "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
      )
    self._fingerprints[name] = output_fingerprint(base)
    self.outcomes.append(StageOutcome(name, status, seconds))
    self.log(f"{label}: done in {seconds:.1f} s")
    return out

  def _adopt(self, name: str, record: dict, fp: str, config: Any, changes: list[str]) -> dict:
    """The stage's record under the new config, its output and the fingerprint downstream sees kept."""
    adopted = {
      **record,
      "fingerprint": fp,
      "config": config,
      "output_fingerprint": output_fingerprint(record),
      "adopted": [*record.get("adopted", []), {"changes": changes, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}],
    }
    if self.is_writer:
      atomic_write_json(self.record_path(name), adopted)
    return adopted

  def _supersede(self, name: str, record: dict) -> None:
    """Moves a stage's old output and record aside (nothing is deleted) before it runs again."""
    target = self.workdir / SUPERSEDED_DIR / f"{name.replace('/', '__')}-{record['fingerprint'][:12]}"
    suffix = 0
    while (candidate := target.with_name(f"{target.name}-{suffix}")).exists():
      suffix += 1
    candidate.mkdir(parents=True)
    out = self.stage_dir(name)
    if out.exists():
      shutil.move(str(out), str(candidate / "output"))
    shutil.move(str(self.record_path(name)), str(candidate / "record.json"))

  def summary(self) -> str:
    """Time spent per stage in this invocation, longest first, with the total."""
    if not self.outcomes:
      return "no stages ran"
    width = max(len(o.name) for o in self.outcomes)
    lines = [f"{'stage':<{width}}  {'status':<8}  seconds"]
    for o in sorted(self.outcomes, key=lambda o: -o.seconds):
      lines.append(f"{o.name:<{width}}  {o.status:<8}  {o.seconds:8.1f}")
    lines.append(f"{'total':<{width}}  {'':<8}  {sum(o.seconds for o in self.outcomes):8.1f}")
    return "\n".join(lines)
