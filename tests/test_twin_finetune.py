"""Textual inversion: our fine-tuning trainer against its PyTorch twin (diffusers' AutoencoderKL,
UNet2DConditionModel, DDPMScheduler.add_noise, transformers' CLIPTextModel, torch AdamW) on the same tiny
random SD (built in PyTorch; ours loads it with diffusers' PT->Flax conversion), the same batches, prompts,
noise and timesteps. CPU, float32, one device.

Tolerance: every step's train loss and every epoch's validation loss agree to 1e-4 relative (measured:
<= 1.7e-6 over 15 steps; diffusers' PT->Flax conversion alone agrees to ~1e-4 on outputs, PROTOCOL.md).
Negative control: the first batch's loss with the noise of the wrong step key (a realistic off-by-one in
the key derivation) is beyond 1e-4 of ours.
"""

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from jax_aug.diffusion import tiny
from jax_aug.finetune import trainer
from jax_aug.finetune.data import epoch_order
from jax_aug.study.config_files import load_module
from jax_aug.twin import finetune as twin_finetune
from jax_aug.twin import report, run

LOSS_RTOL = 1e-4


def ti_config(model_path):
  config = load_module(REPO_ROOT / "configs" / "methods" / "textual_inversion.py").get_config("tiny")
  config.model.path = str(model_path)
  config.model.from_pt = True
  # 3 classes x 4 subset images (10% of 40), batch 4: 3 steps per epoch, 2 epochs.
  config.data.wnids = config.data.wnids[:3]
  config.data.synthetic.train_per_class = 40
  config.finetune.policy.max_epochs = 2
  return config


@pytest.mark.slow
def test_textual_inversion_twin_matches_step_for_step(tmp_path):
  tiny.build_tiny_sd_pt(tmp_path / "sd", seed=3)
  config = ti_config(tmp_path / "sd")
  out = run.finetune_with_twin(config, tmp_path / "run")
  ours = report.load_finetune_metrics(tmp_path / "run")
  twin = report.load_finetune_metrics(tmp_path / "run" / run.TWIN_DIR)

  assert [r["step"] for r in ours["steps"]] == [r["step"] for r in twin["steps"]] == list(range(1, 7))
  np.testing.assert_allclose(
    [r["train_loss"] for r in twin["steps"]], [r["train_loss"] for r in ours["steps"]], rtol=LOSS_RTOL
  )
  assert [r["epoch"] for r in ours["epochs"]] == [r["epoch"] for r in twin["epochs"]] == [1, 2]
  np.testing.assert_allclose(
    [r["val_loss"] for r in twin["epochs"]], [r["val_loss"] for r in ours["epochs"]], rtol=LOSS_RTOL
  )
  assert min(r["train_loss"] for r in ours["steps"]) > 0.5  # real losses (noise prediction near 1)

  # The report overlays both loss curves.
  assert out["report"] == str(tmp_path / "run" / report.REPORT_FILE)
  text = (tmp_path / "run" / report.REPORT_FILE).read_text()
  assert "All 6 steps agree within 0.0001 relative" in text
  assert (tmp_path / "run" / report.FIGURE_FILE).stat().st_size > 10_000
  figure = report.make_finetune_figure(ours, twin, report.compare_finetune(ours, twin))
  for ax, field, rows in ((figure.axes[0], "train_loss", "steps"), (figure.axes[1], "val_loss", "epochs")):
    assert {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()} == {
      "ours (JAX)": [r[field] for r in ours[rows]],
      "twin (PyTorch)": [r[field] for r in twin[rows]],
    }

  # Negative control: the first batch with the noise of step 1's key instead of step 0's.
  prepared = twin_finetune.prepare(config, tmp_path / "run", torch.device("cpu"))
  order = epoch_order(
    len(prepared["train"].examples), config.finetune.batch_size, seed=config.finetune.seed, epoch=1, shuffle=True
  )
  batch = prepared["train"].batch(order[0], epoch=1)
  right = twin_finetune.train_step(
    prepared, batch, trainer.train_step_key(config.finetune.seed, 1, 0), max_grad_norm=1.0, device=torch.device("cpu")
  )
  assert right == pytest.approx(ours["steps"][0]["train_loss"], rel=LOSS_RTOL)
  wrong = twin_finetune.train_step(
    twin_finetune.prepare(config, tmp_path / "run", torch.device("cpu")),
    batch,
    trainer.train_step_key(config.finetune.seed, 1, 1),
    max_grad_norm=1.0,
    device=torch.device("cpu"),
  )
  assert abs(wrong - ours["steps"][0]["train_loss"]) / ours["steps"][0]["train_loss"] > LOSS_RTOL


def test_twin_refuses_other_methods_and_flax_weights(tmp_path):
  config = load_module(REPO_ROOT / "configs" / "methods" / "ft_conditioning.py").get_config("tiny")
  with pytest.raises(ValueError, match="covers textual inversion"):
    twin_finetune.prepare(config, tmp_path, torch.device("cpu"))
  config = load_module(REPO_ROOT / "configs" / "methods" / "textual_inversion.py").get_config("tiny")
  with pytest.raises(ValueError, match="reads PyTorch weights"):
    twin_finetune.prepare(config, tmp_path, torch.device("cpu"))
  with pytest.raises(FileNotFoundError, match="holds no fine-tuning progress"):
    twin_finetune.textual_inversion_twin(config, tmp_path, tmp_path / "twin")
