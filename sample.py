"""Samples one method's augmentation set with Stable Diffusion (resumable).

  python sample.py --config=configs/methods/simple_prompt.py:tiny --workdir=runs/simple_prompt
  # a fine-tuned method (configs with a `finetune` block) samples from its kept checkpoint:
  python sample.py --config=configs/methods/imagic.py:tiny --config.finetune.workdir=runs/imagic \
      --config.finetune.checkpoint=best_val --workdir=runs/imagic_samples
"""

from absl import app, flags
from ml_collections import config_flags

from jax_aug.finetune.sampling import sample_method
from jax_aug.plan import cli as plan_cli  # defines --plan

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/methods/<method>.py:tiny|paper")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory: the augmentation set.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if plan_cli.requested():
    return plan_cli.plan("sample", _CONFIG.value, _WORKDIR.value)
  sample_method(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
