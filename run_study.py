"""Runs (or resumes) the whole study and writes the report; or, with --plan, only plans it.

  python run_study.py --config=configs/tiny.py --workdir=runs/tiny
  python run_study.py --config=configs/paper.py --workdir=runs/paper --config.methods=baseline_10,retrieval
  python run_study.py --config=configs/paper.py --workdir=runs/plan --plan=tpu:v5e-16   (docs/plan.md)
"""

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from jax_aug.study.runner import run_study
from jax_aug.study.stages import StageConfigChanged

_CONFIG = config_flags.DEFINE_config_file("config", None, "Study config, e.g. configs/tiny.py.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for every stage's output and the report.")
_PLAN = flags.DEFINE_string(
    "plan", None, "Compile the hot steps for this target ('local', 'tpu:v5e-16', 'tpu:v5p-8', ...) without"
    " running anything; writes <workdir>/plan/<target>/plan.json (needs the plan extra for TPU targets).")
_PLAN_UTILIZATION = flags.DEFINE_float("plan_utilization", 0.4, "Fraction of peak FLOP/s for --plan's time estimates.")
flags.mark_flags_as_required(["config", "workdir"])


def plan(config, workdir: str) -> None:
  from jax_aug.plan import study as plan_lib  # only --plan needs it (and libtpu for TPU targets)
  out_dir = Path(workdir) / "plan" / _PLAN.value.replace(":", "_")
  result = plan_lib.plan_study(config, _PLAN.value, out_dir, utilization=_PLAN_UTILIZATION.value)
  print(plan_lib.table(result["steps"]))
  print(plan_lib.summary(result))
  print(f"written: {out_dir / plan_lib.PLAN_FILE}")
  try:
    plan_lib.check_fits(result)
  except plan_lib.DoesNotFit as e:
    sys.exit(f"run_study.py --plan: {e}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # Checkpointing logs several INFO lines per epoch, thousands per study; progress is one line per
    # stage on stdout plus progress bars. --verbosity=0 brings the INFO lines back.
    logging.set_verbosity(logging.WARNING)
  if _PLAN.value:
    plan(_CONFIG.value, _WORKDIR.value)
    return
  try:
    run_study(_CONFIG.value, _WORKDIR.value)
  except StageConfigChanged as e:  # a refusal, not a crash: the message says what to do
    sys.exit(f"run_study.py: {e}")


if __name__ == "__main__":
  app.run(main)
