"""The data check: every image of a source opened once, up front, with the decoder training uses.

A bad file (truncated, zero bytes, HTML saved as .jpg, over the byte or pixel limit, unreadable) found in
the middle of an epoch would stop training after hours, in the same place on every resume. So the check
decodes every image before any split is drawn, in parallel processes, and writes to its output folder:

  scanned.jsonl      progress: one row per checked image ({"path", "ok", "reason", "size", "error"});
                     a killed check resumes after the last finished chunk and never re-decodes a file
  quarantine.jsonl   the images that failed: {"path", "reason", "size", "error"} (size in bytes, None for
                     tfds records), sorted by path; reason is one of REASONS
  summary.json       counts: checked, passed, quarantined, per reason, ignored files (not images by
                     their suffix) with examples, seconds and images per second of this run

The splits (`subsets.prepare_splits(..., quarantine=...)`) never see a quarantined file; how a class keeps
its per-class counts is explained in `subsets`. With `strict` the check raises `DataCheckFailed` listing
every bad file instead of quarantining.

`check_path` is what `check_data.py` runs on any ILSVRC folder (with train/ and val/, or one split folder
of <wnid>/ class folders) or augmentation set (a folder with manifest*.jsonl).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import multiprocessing
import os
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from jax_aug.data import augmentation_set, sources
from jax_aug.io import ImageDecodeError, JsonlManifest, atomic_write_json, atomic_write_text

SCANNED_FILE = "scanned.jsonl"
QUARANTINE_FILE = "quarantine.jsonl"
SUMMARY_FILE = "summary.json"
# Why an image is quarantined: its bytes exceed max_bytes, its header exceeds max_pixels, it does not
# decode (truncated, empty, not an image, unsupported), or the file cannot be read at all.
REASONS = ("too_many_bytes", "too_many_pixels", "undecodable", "unreadable")
CHUNK = 64  # images per task handed to a worker process: the resume granularity


class DataCheckFailed(ValueError):
  """`strict` check found bad files; the message lists every one of them."""


def classify(error: Exception) -> str:
  """The quarantine reason of a reader's exception."""
  if isinstance(error, ImageDecodeError):
    message = str(error)
    if "bytes exceeds the limit" in message:
      return "too_many_bytes"
    if "pixels exceeds the limit" in message:
      return "too_many_pixels"
    return "undecodable"
  return "unreadable"


def _file_size(path: str) -> int | None:
  if path.startswith(sources.TFDS_SCHEME):
    return None
  try:
    return os.stat(path).st_size
  except OSError:
    return None


def check_image(path: str, reader: sources.ImageReader) -> dict:
  """One image through the training reader (fully decoded): its scanned.jsonl row."""
  row = {"path": path, "ok": True, "reason": None, "size": _file_size(path), "error": None}
  try:
    reader(path)
  except (ImageDecodeError, OSError, IndexError, ValueError) as e:
    row.update(ok=False, reason=classify(e), error=f"{type(e).__name__}: {e}")
  return row


def _check_chunk(paths: Sequence[str], reader: sources.ImageReader) -> list[dict]:
  return [check_image(p, reader) for p in paths]


def check_records(
  records: Sequence[dict],
  out_dir: str | os.PathLike,
  *,
  reader: sources.ImageReader,
  num_workers: int = 0,
  strict: bool = False,
  ignored: Sequence[str] = (),
  desc: str = "data check",
) -> dict:
  """Decodes every record's image once (resuming `out_dir/scanned.jsonl`), writes quarantine.jsonl and
  summary.json, and returns the summary. `ignored`: files the listing skipped, counted in the summary."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  scanned = JsonlManifest(out_dir / SCANNED_FILE)
  # Only the paths of good images are kept (1.28 M of them on ImageNet), whole rows of the bad ones.
  done, bad = set(), {}
  _record(scanned.read(), done, bad)
  paths = sorted({r["path"] for r in records})
  todo = [p for p in paths if p not in done]
  chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
  start = time.perf_counter()
  with (
    tqdm(total=len(paths), initial=len(paths) - len(todo), desc=desc, unit="img") as progress,
    _pool(num_workers if chunks else 0) as pool,
  ):
    for rows in (pool.map if pool else map)(_check_chunk, chunks, [reader] * len(chunks)):
      scanned.append_many(rows)
      _record(rows, done, bad)
      progress.update(len(rows))
  seconds = time.perf_counter() - start
  bad = [bad[p] for p in paths if p in bad]
  atomic_write_text(
    out_dir / QUARANTINE_FILE,
    "".join(JsonlManifest.line({k: row[k] for k in ("path", "reason", "size", "error")}) for row in bad),
  )
  summary = {
    "checked": len(paths),
    "passed": len(paths) - len(bad),
    "quarantined": len(bad),
    "quarantined_by_reason": dict(sorted(collections.Counter(row["reason"] for row in bad).items())),
    "ignored_files": len(ignored),
    "ignored_examples": list(ignored[:10]),
    "decoded_this_run": len(todo),
    "seconds": seconds,
    "images_per_second": len(todo) / seconds if todo and seconds > 0 else None,
  }
  atomic_write_json(out_dir / SUMMARY_FILE, summary)
  if strict and bad:
    raise DataCheckFailed(
      f"{len(bad)} of {len(paths)} images failed the data check (strict):\n"
      + "\n".join(f"  {row['path']}: {row['reason']} ({row['error']})" for row in bad)
    )
  return summary


def _pool(num_workers: int):
  """Worker processes, or a null context (decode in this process) for 0. Spawned, not forked: a forked
  child of a process that opened tfds array_record readers (or holds jax threads) can crash; a spawned one
  starts clean at the price of importing the caller's main module once (seconds, nothing next to a pass
  over ImageNet)."""
  if num_workers <= 0:
    return contextlib.nullcontext(None)
  return concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn"))


def _record(rows: Sequence[dict], done: set[str], bad: dict[str, dict]) -> None:
  for row in rows:
    done.add(row["path"])
    if not row["ok"]:
      bad[row["path"]] = row


def read_quarantine(path: str | os.PathLike) -> dict[str, str]:
  """{path: reason} of a quarantine.jsonl (a check's output folder or the file itself)."""
  path = Path(path)
  if path.is_dir():
    path = path / QUARANTINE_FILE
  if not path.is_file():
    raise FileNotFoundError(f"quarantine list not found: {path} (run the data check first: check_data.py)")
  return {row["path"]: row["reason"] for row in JsonlManifest(path).read()}


def _is_split_folder(folder: Path) -> bool:
  return any(p.is_dir() and augmentation_set.WNID_RE.fullmatch(p.name) for p in folder.iterdir())


def list_source(path: str | os.PathLike) -> tuple[str, list[dict], list[str]]:
  """(kind, records, ignored files) of an augmentation set, an ILSVRC folder (train/ and/or val/ of
  <wnid>/ folders) or one split folder of <wnid>/ folders; anything else is an error saying what was
  expected."""
  path = Path(path).resolve()
  if not path.is_dir():
    raise FileNotFoundError(f"data folder not found: {path}")
  if any(path.glob(augmentation_set.MANIFEST_GLOB)):
    return "augmentation_set", augmentation_set.load_augmentation_set(path), []
  splits = [path / s for s in ("train", "val") if (path / s).is_dir()]
  if splits:
    records, ignored = [], []
    for split in splits:
      split_records, split_ignored = sources.folder_listing(split)
      records += split_records
      ignored += split_ignored
    return "ilsvrc_folder", records, ignored
  if _is_split_folder(path):
    return "split_folder", *sources.folder_listing(path)
  raise ValueError(
    f"{path}: not a data folder: expected an augmentation set ({augmentation_set.MANIFEST_GLOB}),"
    " an ILSVRC folder (train/ and val/ of <wnid>/ class folders) or one split folder of <wnid>/"
    " class folders"
  )


def check_path(
  path: str | os.PathLike,
  out_dir: str | os.PathLike,
  *,
  num_workers: int = 0,
  strict: bool = False,
  reader: sources.ImageReader | None = None,
) -> dict:
  """The data check of a folder (see `list_source`) into `out_dir`; returns the summary (with "kind")."""
  kind, records, ignored = list_source(path)
  summary = check_records(
    records,
    out_dir,
    reader=reader or sources.ImageReader(),
    num_workers=num_workers,
    strict=strict,
    ignored=ignored,
    desc=f"checking {Path(path).name}",
  )
  summary = {"kind": kind, "source": str(Path(path).resolve()), **summary}
  atomic_write_json(Path(out_dir) / SUMMARY_FILE, summary)
  return summary
