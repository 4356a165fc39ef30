"""Personalization fine-tuning of Stable Diffusion (FT conditioning, FT cluster conditioning, Imagic,
textual inversion, pseudo-word + DM): one trainer, the method is the config.

  python finetune_dm.py --config=configs/methods/textual_inversion.py:tiny --workdir=runs/ti
"""

from absl import app, flags
from ml_collections import config_flags

from jax_aug.finetune.trainer import finetune

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/methods/<method>.py:tiny|paper")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and progress go")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  finetune(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
