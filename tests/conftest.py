"""Shared test fixtures: JAX programs in fresh subprocesses with N forced CPU devices, and multi-host runs
of several local processes joined through jax.distributed on 127.0.0.1; and, when the suite runs on several
pytest-xdist workers (the README's command), the rule that a test marked `alone` runs with no other test
beside it; one persistent JAX compilation cache for the whole run; and no PyTorch in the processes tests start
unless a test asks for it (tests/subprocess_site/sitecustomize.py)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_MARKER = "@@RESULT@@"
SUBPROCESS_SITE = Path(__file__).resolve().parent / "subprocess_site"


@contextlib.contextmanager
def _flock(path: Path, operation: int):
  with open(path, "a") as f:
    fcntl.flock(f, operation)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


# The longest test files, longest first (seconds on one worker, summed over the file's tests, in a full run of the
# README's command on a 2-core machine, 2026-11-27: test_plan 1224, fine-tuning end to end 594, fine-tuning methods
# 455, ...; the SD v1.4 file runs first anyway, `alone`): xdist hands a worker the next file when it runs short, so
# the suite ends on short files and neither worker idles while the other finishes a long one. Only an order: a
# stale list costs minutes, never a test.
LONGEST_FILES = (
  "test_plan.py",
  "test_finetune_end_to_end.py",
  "test_finetune_methods.py",
  "test_mini_world_shipped.py",
  "test_retrieval_clip_back.py",
  "test_finetune_objective.py",
  "test_finetune_fsdp.py",
  "test_study_end_to_end.py",
  "test_diffusion_engine.py",
  "test_classifier_train.py",
  "test_finetune_parallel.py",
  "test_study_mini_world.py",
  "test_diffusion_equivalence.py",
  "test_study_custom_dataset.py",
  "test_metrics.py",
  "test_classifier_torch_equivalence.py",
  "test_mini_world_training.py",
)


def pytest_configure(config):
  """One persistent JAX compilation cache for the run, shared by both workers and every subprocess a test
  starts (they inherit the environment): many tests build the same tiny models at the same shapes, and a
  compile costs seconds on a 2-core machine. Fresh per run, so no test meets programs an older checkout
  compiled. A cache the caller chose (JAX_COMPILATION_CACHE_DIR already set) is kept."""
  if "PYTEST_XDIST_WORKER" in os.environ or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  config.jax_aug_compilation_cache = tempfile.mkdtemp(prefix="jax_aug_tests_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = config.jax_aug_compilation_cache


@pytest.fixture(scope="session", autouse=True)
def _subprocesses_without_torch():
  """Every process a test starts (they inherit the environment) imports tests/subprocess_site/sitecustomize.py
  first: no PyTorch there unless asked for (`torch=True` of run_jax / _jax_env). Set in the process that runs
  the tests (a fixture, not pytest_configure, so that xdist's workers start without it): the tests' own
  process keeps torch for its in-process comparisons."""
  paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
  if str(SUBPROCESS_SITE) not in paths:
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SUBPROCESS_SITE), *paths])


def pytest_unconfigure(config):
  cache = getattr(config, "jax_aug_compilation_cache", None)
  if cache is not None:
    shutil.rmtree(cache, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  """`alone` tests first, then the longest files, stable otherwise (the README's command keeps this order:
  --no-loadscope-reorder). `alone` first: a pytest worker keeps several GB of what its earlier in-process tests
  allocated, so the 18.5 GB test gets the room it needs only while both workers are fresh (measured: run at the
  end of the suite it met 15 GB free and was killed by the kernel's OOM killer)."""

  def rank(item):
    name = item.path.name
    return (
      item.get_closest_marker("alone") is None,
      LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES),
    )

  items.sort(key=rank)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  """Under xdist, every test holds a shared lock from its setup (module fixtures included) to its teardown,
  and a test marked `alone` (a memory peak that leaves no room for a neighbour on a 24 GiB machine) an
  exclusive one. The gate gives a waiting `alone` test precedence: it holds the gate while it waits, so the
  other workers start nothing new, and runs once their current tests end."""
  if "PYTEST_XDIST_WORKER" not in os.environ:
    yield
    return
  locks = item.config._tmp_path_factory.getbasetemp().parent  # shared by the workers: <run>/popen-gw<i>
  mode = fcntl.LOCK_EX if item.get_closest_marker("alone") else fcntl.LOCK_SH
  with contextlib.ExitStack() as held:
    with _flock(locks / "alone.gate", fcntl.LOCK_EX):
      held.enter_context(_flock(locks / "alone.lock", mode))
    yield


def _jax_env(devices: int, *, torch: bool = False) -> dict:
  """A test subprocess's environment: `devices` forced CPU devices; PyTorch importable only with `torch`."""
  env = dict(os.environ)
  if torch:
    env["JAX_AUG_TEST_TORCH"] = "1"
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
  return env


def _program(code: str) -> str:
  """Wraps test code so that `emit(obj)` sends a JSON result back to the test."""
  prelude = f"import json as _json\ndef emit(obj):\n    print({RESULT_MARKER!r} + _json.dumps(obj), flush=True)\n"
  return prelude + textwrap.dedent(code)


def _parse_result(stdout: str):
  for line in stdout.splitlines():
    if line.startswith(RESULT_MARKER):
      return json.loads(line[len(RESULT_MARKER) :])
  return None


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture
def run_jax():
  """run_jax(code, devices=N, timeout=..., torch=False) runs `code` in a new Python with N forced host devices
  (PyTorch importable only with torch=True) and returns what it passed to `emit(...)`; a failing program fails
  the test with its stderr."""

  def run(code: str, devices: int = 1, timeout: float = 600, cwd: str | os.PathLike | None = None, *, torch: bool = False):
    proc = subprocess.run(
      [sys.executable, "-c", _program(code)],
      env=_jax_env(devices, torch=torch),
      cwd=cwd or REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=timeout,
    )
    if proc.returncode != 0:
      pytest.fail(
        f"subprocess with {devices} devices failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
      )
    return _parse_result(proc.stdout)

  return run


@pytest.fixture
def run_multihost():
  """run_multihost(code, processes=P, devices_per_process=D) runs `code` in P processes joined by
  jax.distributed on 127.0.0.1 (variables PROCESS_ID, NUM_PROCESSES, COORDINATOR are predefined; the code
  calls jax_aug.sharding.initialize_distributed itself) and returns each process's emitted result."""

  def run(code: str, processes: int = 2, devices_per_process: int = 2, timeout: float = 600):
    coordinator = f"127.0.0.1:{free_port()}"
    procs = []
    for pid in range(processes):
      header = f"PROCESS_ID = {pid}\nNUM_PROCESSES = {processes}\nCOORDINATOR = {coordinator!r}\n"
      procs.append(
        subprocess.Popen(
          [sys.executable, "-c", _program(header + textwrap.dedent(code))],
          env=_jax_env(devices_per_process),
          cwd=REPO_ROOT,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
        )
      )
    results = []
    try:
      for pid, proc in enumerate(procs):
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
          pytest.fail(f"process {pid}/{processes} failed (rc={proc.returncode}):\n{out[-4000:]}\n{err[-8000:]}")
        results.append(_parse_result(out))
    finally:
      for proc in procs:
        if proc.poll() is None:
          proc.kill()
    return results

  return run
