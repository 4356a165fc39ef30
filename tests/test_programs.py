"""jax_aug.programs: a long process's compiled programs released before Linux's memory-map limit (a fresh mini
study died at stage 25 of 80 with "LLVM compilation error: Cannot allocate memory" and SIGSEGV)."""

import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memory maps are read from Linux's /proc")

RELEASE_CODE = """
import tempfile
from pathlib import Path
import jax, jax.numpy as jnp
from jax_aug import programs
from jax_aug.diffusion import engine

def maps():  # counted here, independently of programs.map_count
  return len(Path('/proc/self/maps').read_bytes().splitlines())

before = maps()
for channels in range(1, 21):  # 20 programs in one of the project's program caches (engine._NOISE_FNS)
  engine.initial_noise(0, [1, 2], [3, 4], [0, 0], (channels, 8, 8))
engine._SAMPLERS['a sampler'] = object()
first = engine.initial_noise(0, [1, 2], [3, 4], [0, 0], (7, 8, 8))
grown, counted = maps(), programs.map_count()
logged = []
untouched = programs.release_if_near_map_limit(logged.append)  # the real limit: far from half of it
kept = maps()
limit = Path(tempfile.mkdtemp()) / 'max_map_count'
limit.write_text(str(grown))  # a limit this process is past half of
programs.MAX_MAP_COUNT = limit
released = programs.release_if_near_map_limit(logged.append)
after = maps()
again = engine.initial_noise(0, [1, 2], [3, 4], [0, 0], (7, 8, 8))  # a released program runs again (compiled anew)
same = bool((again == first).all())
emit([before, grown, counted, untouched, kept, released, after, logged, 'a sampler' in engine._SAMPLERS, same])
"""


def test_programs_are_released_past_half_the_map_limit_and_kept_below(run_jax):
  before, grown, counted, untouched, kept, released, after, logged, sampler_kept, same = run_jax(RELEASE_CODE)
  assert grown - before > 100  # 20 noise programs: about 50 maps each (code, read-only data, data)
  assert abs(counted - grown) < 20
  assert untouched is False and abs(kept - grown) < 20  # below half the real limit: nothing dropped
  assert released is True and after - before < 0.3 * (grown - before), (before, grown, after)
  assert len(logged) == 1 and f"{grown:,} memory maps" in logged[0].replace(f"{counted:,}", f"{grown:,}")
  assert not sampler_kept  # the project's caches emptied with jax's
  assert same  # the per-item noise drawn again, bit for bit
