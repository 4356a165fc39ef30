"""`--plan=<target>` for the entry scripts (run_study.py, train_classifier.py, finetune_dm.py, sample.py,
retrieve.py): importing this module defines the flags; `plan(script, config, workdir)` compiles that
script's hot steps for the target instead of running, prints the table, writes
<workdir>/plan/<target>/plan.json and exits with status 1 when a stage does not fit or cannot run.
"""

import sys
from pathlib import Path

from absl import flags

PLAN = flags.DEFINE_string(
  "plan",
  None,
  "Compile the hot steps for this target ('local', 'tpu:v5e-16', 'tpu:v5p-8', ...) without"
  " running anything; writes <workdir>/plan/<target>/plan.json (TPU targets need the plan extra).",
)
PLAN_UTILIZATION = flags.DEFINE_float("plan_utilization", 0.4, "Fraction of peak FLOP/s for --plan's time estimates.")


def requested() -> bool:
  return bool(PLAN.value)


def plan(script: str, config, workdir: str) -> None:
  """Plans `script`'s steps ("study", "classifier", "finetune", "sample" or "retrieval") for --plan."""
  from jax_aug.plan import study as plan_lib  # only --plan needs it (and libtpu for TPU targets)

  out_dir = Path(workdir) / "plan" / PLAN.value.replace(":", "_")
  if script == "study":
    result = plan_lib.plan_study(config, PLAN.value, out_dir, utilization=PLAN_UTILIZATION.value)
  else:
    result = plan_lib.plan_script(script, config, PLAN.value, out_dir, utilization=PLAN_UTILIZATION.value)
  print(plan_lib.table(result["steps"]))
  print(plan_lib.summary(result))
  print(f"written: {out_dir / plan_lib.PLAN_FILE}")
  try:
    plan_lib.check_fits(result)
  except plan_lib.DoesNotFit as e:
    sys.exit(f"{Path(sys.argv[0]).name} --plan: {e}")
