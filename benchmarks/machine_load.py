"""The load average printed before and after every benchmark: on a shared machine a figure is a measurement only
when nothing else ran beside it, and the reader of a printed figure needs the evidence next to it.

Each benchmark ends with `machine_load.run(main)` in place of absl's `app.run(main)`."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path

from absl import app


def cpu_name() -> str:
  """The host CPU as Linux names it (model name, family and model: machines sold under one name differ, and XLA
  compiles for the CPU it finds), else what `platform` knows."""
  try:
    fields = dict(row.split(":", 1) for row in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines() if ":" in row)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return f"{fields.get('model name', '?')}, family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
  except OSError:
    return platform.processor() or platform.machine()


def line(when: str) -> str:
  one, five, fifteen = os.getloadavg()
  return f"load average {when} (1/5/15 min): {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores ({cpu_name()})"


def run(main: Callable[[list[str]], None]) -> None:
  """absl's app.run(main), with the load average printed before main starts and after it ends (the 1-minute
  figure after a run is mostly the benchmark's own threads; the 15-minute one before it tells whether the
  machine had been busy)."""

  def with_load(argv):
    print(line("before"), flush=True)
    try:
      return main(argv)
    finally:
      print(line("after"), flush=True)

  app.run(with_load)
