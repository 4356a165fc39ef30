"""Trains and scores one ResNet classifier (a baseline or subset + one resampled augmentation set).

  python train_classifier.py --config=configs/methods/baseline_10pct.py:tiny --workdir=runs/baseline_10pct

With --twin=torch the same training also runs in PyTorch (torchvision, `pip install -e ".[twin]"`) on the
same batches, into <workdir>/twin_torch, and <workdir>/twin_report.{md,png} overlays the two (docs/twin.md).

Multi-host: run the same command on every host with --coordinator_address=HOST:PORT
--num_processes=N --process_id=i (each host then loads only its share of every batch).
"""

import logging
import os

from absl import app, flags
from ml_collections import config_flags

from jax_aug import sharding
from jax_aug.classifier import train
from jax_aug.plan import cli as plan_cli  # defines --plan

_CONFIG = config_flags.DEFINE_config_file("config", None, "classifier or method config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics.jsonl, results.json)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "multi-host: host:port of process 0")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "multi-host: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "multi-host: this process's index")
_TWIN = flags.DEFINE_enum("twin", "", ["", "torch"], "also train the PyTorch twin and write the comparison")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.getLogger("jax_aug").setLevel(logging.INFO)
  if plan_cli.requested():
    return plan_cli.plan("classifier", _CONFIG.value, _WORKDIR.value)
  if _TWIN.value == "torch":
    if _NUM_PROCESSES.value > 1:
      raise app.UsageError("--twin=torch runs on one host (the twin is a single-process PyTorch loop)")
    # Both frameworks share one GPU: JAX must not preallocate most of its memory (docs/twin.md). Set before
    # JAX's first use, which starts its backend.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from jax_aug.twin import run  # pylint: disable=g-import-not-at-top  (imports torch)

    print(run.train_with_twin(_CONFIG.value, _WORKDIR.value)["report"])
    return
  if _COORDINATOR.value:
    sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
