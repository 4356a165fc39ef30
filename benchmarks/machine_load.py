"""The load average printed before and after every benchmark: on a shared machine a figure is a measurement only
when nothing else ran beside it, and the reader of a printed figure needs the evidence next to it.

Each benchmark ends with `machine_load.run(main)` in place of absl's `app.run(main)`."""

from __future__ import annotations

import os
from collections.abc import Callable

from absl import app


def line(when: str) -> str:
  one, five, fifteen = os.getloadavg()
  return f"load average {when} (1/5/15 min): {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


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
