"""Runs (or resumes) the whole study and writes the report; or, with --plan, only plans it.

python run_study.py --config=configs/tiny.py --workdir=runs/tiny
python run_study.py --config=configs/paper.py --workdir=runs/paper --config.methods=baseline_10,retrieval
python run_study.py --config=configs/paper.py --workdir=runs/plan --plan=tpu:v5e-16   (docs/plan.md)
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jax_aug.plan import cli as plan_cli
from jax_aug.study.runner import run_study
from jax_aug.study.stages import StageConfigChanged

_CONFIG = config_flags.DEFINE_config_file("config", None, "Study config, e.g. configs/tiny.py.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for every stage's output and the report.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # Checkpointing logs several INFO lines per epoch, thousands per study; progress is one line per
    # stage on stdout plus progress bars. --verbosity=0 brings the INFO lines back.
    logging.set_verbosity(logging.WARNING)
  if plan_cli.requested():
    plan_cli.plan("study", _CONFIG.value, _WORKDIR.value)
    return
  try:
    run_study(_CONFIG.value, _WORKDIR.value)
  except StageConfigChanged as e:  # a refusal, not a crash: the message says what to do
    sys.exit(f"run_study.py: {e}")


if __name__ == "__main__":
  app.run(main)
