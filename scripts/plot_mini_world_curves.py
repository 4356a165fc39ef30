"""Plots the mini world's training curves (each stage's metrics.jsonl: loss against step, evaluations, wall
time) into one PNG.

  python scripts/plot_mini_world_curves.py --train=mini_world_runs/train --out=docs/mini_world_curves.png
"""

import json
import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_TRAIN = flags.DEFINE_string("train", None, "training output folder (scripts/train_mini_world.py --out)", required=True)
_OUT = flags.DEFINE_string("out", None, "PNG to write", required=True)
# What to draw per stage beside the training loss: its evaluation on held-out data.
EVALUATIONS = {"clip": "monitor_zero_shot_top1", "vae": "holdout_l1", "unet": "holdout_loss"}


def main(argv):
  del argv
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  stages = [s for s in EVALUATIONS if (Path(_TRAIN.value) / s / "metrics.jsonl").exists()]
  if not stages:
    raise FileNotFoundError(f"no <stage>/metrics.jsonl under {_TRAIN.value}")
  fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.4), squeeze=False)
  for ax, stage in zip(axes[0], stages):
    rows = [json.loads(line) for line in (Path(_TRAIN.value) / stage / "metrics.jsonl").read_text().splitlines() if line]
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss")
    evaluated = [r for r in rows if EVALUATIONS[stage] in r]
    if evaluated:
      twin = ax.twinx()
      twin.plot(
        [r["step"] for r in evaluated],
        [r[EVALUATIONS[stage]] for r in evaluated],
        "o-",
        color="C1",
        label=EVALUATIONS[stage],
      )
      twin.set_ylabel(EVALUATIONS[stage], color="C1")
    ax.set_title(f"{stage}: {rows[-1]['step']} steps, {rows[-1]['wall_s'] / 60:.0f} min wall")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
  fig.tight_layout()
  Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(_OUT.value, dpi=80)


if __name__ == "__main__":
  app.run(main)
