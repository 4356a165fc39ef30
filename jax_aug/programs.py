"""The compiled programs a long process holds, released before Linux's memory-map limit ends the process.

XLA's CPU backend maps each compiled kernel's code, read-only data and data as separate anonymous memory maps
(about 15 per small program; a sampler's or a classifier's programs add thousands), and a study process keeps
every program it loads: the project's caches (`engine._SAMPLERS`, `engine._NOISE_FNS`, `classifier.train._RUN_STEPS`)
and jax's own. Linux refuses a process more than `vm.max_map_count` maps (65,530 by default); past it LLVM's JIT
cannot map a new program ("LLVM compilation error: Cannot allocate memory") and the process dies with SIGSEGV.
That ended a fresh mini study (configs/mini.py, one process) at stage 25 of 80 after 76 minutes (2026-11-27); its
resumed process held 11,700 maps five minutes in (docs/mini_world.md, "A study process killed by its memory maps").

So the study runner calls `release_if_near_map_limit` between stages and between a selection's candidates: past
half the limit it drops every compiled program (the next call reloads it from the persistent compilation cache, a
deserialisation, not a compile). Below half it does nothing, so a process with room keeps its programs.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import jax

PROC_MAPS = Path("/proc/self/maps")
MAX_MAP_COUNT = Path("/proc/sys/vm/max_map_count")


def map_count() -> int | None:
  """This process's memory maps (lines of /proc/self/maps); None where the system has no /proc (macOS)."""
  try:
    with PROC_MAPS.open("rb") as maps:
      return sum(1 for _ in maps)
  except OSError:
    return None


def map_limit() -> int | None:
  """Linux's per-process limit on memory maps (vm.max_map_count); None where there is none to read."""
  try:
    return int(MAX_MAP_COUNT.read_text())
  except (OSError, ValueError):
    return None


def release_programs() -> None:
  """Drops every compiled program this process holds: the project's program caches, then jax's caches (its
  C++ per-function executables included), then the garbage they leave, so their memory maps are unmapped."""
  from jax_aug.classifier import train
  from jax_aug.diffusion import engine

  engine._SAMPLERS.clear()
  engine._NOISE_FNS.clear()
  train._RUN_STEPS.clear()
  jax.clear_caches()
  gc.collect()


def release_if_near_map_limit(log: Callable[[str], None], fraction: float = 0.5) -> bool:
  """release_programs() when this process holds more than `fraction` of vm.max_map_count maps; True if it did."""
  count, limit = map_count(), map_limit()
  if count is None or limit is None or count <= fraction * limit:
    return False
  release_programs()
  log(f"released compiled programs: {count:,} memory maps of the {limit:,} Linux allows a process, {map_count():,} after")
  return True
