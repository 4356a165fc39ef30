"""libtpu's cost to the startup of ordinary runs: wall time of a fresh Python that imports the training code
and asks for its devices, with libtpu importable (JAX_PLATFORMS unset: jax probes for a TPU first), with
the probe skipped (JAX_PLATFORMS=cpu), and with libtpu masked (a stand-in package on PYTHONPATH whose
import fails, as in a venv without the `plan` extra).

  .venv/bin/python benchmarks/startup_time.py --repeats=10

Each setting runs --repeats times, interleaved (so load drifts hit all alike); prints the median and
minimum seconds of each and the ratio of the default (libtpu importable, JAX_PLATFORMS unset) to the masked
one. Run it on an idle machine: each run is a cold process, dominated by imports.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine_load
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 10, "runs per setting")
flags.DEFINE_string(
  "code",
  "import jax_aug.classifier.train, jax; jax.devices()",
  "what each fresh Python runs (the import of an entry script's code + the first jax.devices())",
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(env: dict) -> float:
  start = time.perf_counter()
  subprocess.run(
    [sys.executable, "-c", FLAGS.code],
    env=env,
    cwd=REPO_ROOT,
    check=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  return time.perf_counter() - start


def main(argv):
  del argv
  base = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "PYTHONPATH")}
  with tempfile.TemporaryDirectory() as tmp:
    # A package named libtpu ahead of site-packages whose import fails: jax then finds no TPU plugin.
    (Path(tmp) / "libtpu").mkdir()
    (Path(tmp) / "libtpu" / "__init__.py").write_text("raise ImportError('libtpu masked by startup_time.py')\n")
    settings = {
      "libtpu importable, JAX_PLATFORMS unset": base,
      "libtpu importable, JAX_PLATFORMS=cpu": {**base, "JAX_PLATFORMS": "cpu"},
      "libtpu masked, JAX_PLATFORMS unset": {**base, "PYTHONPATH": tmp},
    }
    times = {name: [] for name in settings}
    for _ in range(FLAGS.repeats):
      for name, env in settings.items():
        times[name].append(_run(env))
  for name, seconds in times.items():
    print(f"{name:<40} median {statistics.median(seconds):6.2f} s   min {min(seconds):6.2f} s   ({len(seconds)} runs)")
  default = statistics.median(times["libtpu importable, JAX_PLATFORMS unset"])
  masked = statistics.median(times["libtpu masked, JAX_PLATFORMS unset"])
  print(f"ratio default / libtpu masked: {default / masked:.3f} ({default - masked:+.2f} s)")


if __name__ == "__main__":
  machine_load.run(main)
