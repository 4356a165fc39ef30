"""Trains and scores one ResNet classifier (a baseline or subset + one resampled augmentation set).

  python train_classifier.py --config=configs/methods/baseline_10pct.py:tiny --workdir=runs/baseline_10pct

Multi-host: run the same command on every host with --coordinator_address=HOST:PORT
--num_processes=N --process_id=i (each host then loads only its share of every batch).
"""

import logging

from absl import app, flags
from ml_collections import config_flags

from jax_aug import sharding
from jax_aug.classifier import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "classifier or method config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics.jsonl, results.json)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "multi-host: host:port of process 0")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "multi-host: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "multi-host: this process's index")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.getLogger("jax_aug").setLevel(logging.INFO)
  if _COORDINATOR.value:
    sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
