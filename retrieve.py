"""Retrieves the augmentation set of paper method 10 (nearest LAION neighbours of the no-ws prompt).

  python retrieve.py --config=configs/methods/retrieval.py:tiny --workdir=runs/retrieval

Writes <workdir>/augmentation_set/ (images + manifest with url, caption, similarity, aesthetic score),
<workdir>/excluded_classes.json, candidates.jsonl (every candidate fetched and why it was dropped) and
metrics.jsonl. Rerunning the same command resumes without fetching any candidate again.
"""

import logging

from absl import app, flags
from ml_collections import config_flags

from jax_aug.plan import cli as plan_cli  # defines --plan
from jax_aug.retrieval import retrieve

_CONFIG = config_flags.DEFINE_config_file("config", None, "retrieval config file", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.getLogger("jax_aug").setLevel(logging.INFO)
  if plan_cli.requested():
    return plan_cli.plan("retrieval", _CONFIG.value, _WORKDIR.value)
  print(retrieve(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
