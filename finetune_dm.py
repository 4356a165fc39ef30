"""Personalization fine-tuning of Stable Diffusion (FT conditioning, FT cluster conditioning, Imagic,
textual inversion, pseudo-word + DM): one trainer, the method is the config.

  python finetune_dm.py --config=configs/methods/textual_inversion.py:tiny --workdir=runs/ti

With --twin=torch (textual inversion, a base model with PyTorch weights and model.from_pt=True) the same
run is repeated as a PyTorch loop over diffusers' models into <workdir>/twin_torch, and
<workdir>/twin_report.{md,png} overlays the loss curves (docs/twin.md).
"""

import os

from absl import app, flags
from ml_collections import config_flags

from jax_aug.finetune.trainer import finetune
from jax_aug.plan import cli as plan_cli  # defines --plan

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/methods/<method>.py:tiny|paper")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and progress go")
_TWIN = flags.DEFINE_enum("twin", "", ["", "torch"], "also run the PyTorch twin and write the comparison")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if plan_cli.requested():
    return plan_cli.plan("finetune", _CONFIG.value, _WORKDIR.value)
  if _TWIN.value == "torch":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and PyTorch share one GPU
    from jax_aug.twin import run  # pylint: disable=g-import-not-at-top  (imports torch)

    print(run.finetune_with_twin(_CONFIG.value, _WORKDIR.value)["report"])
    return
  finetune(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
