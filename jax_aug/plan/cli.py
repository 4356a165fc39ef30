"""`--plan=<target>` for the entry scripts (run_study.py, train_classifier.py, finetune_dm.py, sample.py,
retrieve.py): importing this module defines the flags; `plan(script, config, workdir)` compiles that
script's hot steps for the target instead of running, prints the table, writes
<workdir>/plan/<target>/plan.json and exits with status 1 when a stage does not fit or cannot run.
"""

import subprocess
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
PLAN_STAGE = flags.DEFINE_string(
  "plan_stage",
  None,
  "Set by --plan itself: compile only this stage's step into the plan cache and exit. A --plan run compiles"
  " each step not yet cached in such a process of its own, so every compile's memory goes back to the system.",
)

PLAN_IN_ONE_PROCESS = flags.DEFINE_bool(
  "plan_in_one_process",
  False,
  "Compile every step in this process instead of one process per step: quicker for a small config (no process"
  " start-ups), but a paper-sized plan needs the separate processes (XLA keeps much of each compile's memory).",
)


def _compile_in_child(stage: str) -> None:
  """Runs this same command line again with --plan_stage=stage (its output goes to this terminal)."""
  sys.stdout.flush()
  status = subprocess.run([sys.executable, *sys.argv, f"--plan_stage={stage}"], check=False).returncode
  if status != 0:
    raise RuntimeError(
      f"the process compiling {stage} exited with status {status} (its output is above; -9 is the kernel's"
      " out-of-memory killer)"
    )


def requested() -> bool:
  return bool(PLAN.value)


def plan(script: str, config, workdir: str) -> None:
  """Plans `script`'s steps ("study", "classifier", "finetune", "sample" or "retrieval") for --plan."""
  from jax_aug.plan import study as plan_lib  # only --plan needs it (and libtpu for TPU targets)

  out_dir = Path(workdir) / "plan" / PLAN.value.replace(":", "_")
  compile_in_child = None if PLAN_IN_ONE_PROCESS.value else _compile_in_child
  kwargs = dict(utilization=PLAN_UTILIZATION.value, compile_in_child=compile_in_child, only_stage=PLAN_STAGE.value)
  if script == "study":
    result = plan_lib.plan_study(config, PLAN.value, out_dir, **kwargs)
  else:
    result = plan_lib.plan_script(script, config, PLAN.value, out_dir, **kwargs)
  if PLAN_STAGE.value:
    return  # a child of a --plan run: its step is in the cache
  print(plan_lib.table(result["steps"]))
  print(plan_lib.summary(result))
  print(f"written: {out_dir / plan_lib.PLAN_FILE}")
  try:
    plan_lib.check_fits(result)
  except plan_lib.DoesNotFit as e:
    sys.exit(f"{Path(sys.argv[0]).name} --plan: {e}")
