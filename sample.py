"""Samples one method's augmentation set with Stable Diffusion (resumable).

  python sample.py --config=configs/methods/simple_prompt.py:tiny --workdir=runs/simple_prompt
"""

from absl import app, flags
from ml_collections import config_flags

from jax_aug.diffusion.run import sample_augmentation_set

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/methods/<method>.py:tiny|paper")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory: the augmentation set.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  sample_augmentation_set(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
