"""Samples one method's augmentation set with Stable Diffusion (resumable), by its kind (`config.method.kind`).

  python sample.py --config=configs/methods/simple_prompt.py:tiny --workdir=runs/simple_prompt
  # a fine-tuned method (kind finetuned) samples from its kept checkpoint:
  python sample.py --config=configs/methods/imagic.py:tiny --config.finetune.workdir=runs/imagic \
      --config.finetune.checkpoint=best_val --workdir=runs/imagic_samples
"""

from absl import app, flags
from ml_collections import config_flags

from jax_aug.method_kinds import make_augmentation_set
from jax_aug.plan import cli as plan_cli  # defines --plan

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/methods/<method>.py:tiny|paper[,key=value,...]")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory: the augmentation set.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if plan_cli.requested():
    return plan_cli.plan("sample", _CONFIG.value, _WORKDIR.value)
  make_augmentation_set(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
