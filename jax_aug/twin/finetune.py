"""Textual inversion's PyTorch twin: the fine-tuning trainer's run (jax_aug/finetune/trainer.py) redone as a
PyTorch loop over diffusers' `AutoencoderKL`, `UNet2DConditionModel`, `DDPMScheduler.add_noise` and
transformers' `CLIPTextModel`, on the same weights, batches, templates, noise and timesteps.

Shared with the trainer, not copied: the splits and examples (`trainer.split_records`, `make_examples`),
the batches (`BatchReader`: images, textual-inversion prompts, order), the pseudo-word tokens and their
initial embeddings (`jax_aug.finetune.pseudo_word`), and the random draws: each example's VAE posterior
noise, diffusion noise and timestep come from `trainer.example_draws` under the trainer's own step keys
(`trainer.train_step_key`, `trainer.validation_key`), drawn by JAX and handed to PyTorch as tensors.
PyTorch's own: the three networks, the forward diffusion, autograd, gradient clipping and AdamW.

The twin runs as many epochs as our run did (its progress record, `checkpoints.read_progress`) and writes
metrics.jsonl in the trainer's
format (one row per step, one per epoch with the validation loss). It needs the base model as PyTorch
weights (a diffusers folder; our run loads the same folder with `model.from_pt=True`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from jax_aug import io
from jax_aug.finetune import pseudo_word, trainer
from jax_aug.finetune.checkpoints import read_progress
from jax_aug.finetune.data import BatchReader, epoch_order
from jax_aug.finetune.trainables import Trainables

TEXTUAL_INVERSION = Trainables("pseudo_word", 1, False)


class PseudoWordEmbedding(nn.Module):
  """CLIP's token embedding with the trainable pseudo-word rows appended (ids len(vocab)...), as the
  trainer's `pseudo_word.extended_table`; the original rows stay frozen."""

  def __init__(self, frozen: nn.Embedding, pseudo_words: torch.Tensor):
    super().__init__()
    self.register_buffer("frozen", frozen.weight.detach().clone())
    self.pseudo_words = nn.Parameter(pseudo_words.clone())

  def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
    return F.embedding(input_ids, torch.cat([self.frozen, self.pseudo_words]))


def load_torch_sd(model_config: Any) -> dict:
  """diffusers' / transformers' PyTorch models of the config's base SD folder, frozen, float32."""
  from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
  from transformers import CLIPTextModel, CLIPTokenizer

  if not model_config.path or not model_config.from_pt:
    raise ValueError(
      "the PyTorch twin reads PyTorch weights: set model.path to a diffusers folder with PyTorch"
      f" weights and model.from_pt=True (got path={model_config.path!r}, from_pt={model_config.from_pt})"
    )
  if model_config.dtype != "float32":
    raise ValueError(f"the twin compares float32 runs; got model.dtype={model_config.dtype!r}")
  path, revision = model_config.path, model_config.revision or None
  models = {
    "unet": UNet2DConditionModel.from_pretrained(path, subfolder="unet", revision=revision),
    "vae": AutoencoderKL.from_pretrained(path, subfolder="vae", revision=revision),
    "text_encoder": CLIPTextModel.from_pretrained(path, subfolder="text_encoder", revision=revision),
  }
  for model in models.values():
    model.requires_grad_(False)
    model.eval()
  models["tokenizer"] = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", revision=revision)
  # SD ships PNDM's scheduler config; its training betas are DDPM's (as objective.schedule_from_scheduler_config).
  models["scheduler"] = DDPMScheduler.from_pretrained(path, subfolder="scheduler", revision=revision)
  return models


def _to_torch(x, device, dtype=None) -> torch.Tensor:
  tensor = torch.from_numpy(np.array(x))
  return tensor.to(device=device, dtype=dtype) if dtype is not None else tensor.to(device)


def per_example_loss(models: dict, batch: dict, draws: dict, device: torch.device) -> torch.Tensor:
  """[B] noise-prediction MSE of each example, the latent-diffusion objective in diffusers' PyTorch."""
  vae, unet = models["vae"], models["unet"]
  with torch.no_grad():
    posterior = vae.encode(_to_torch(batch["image"], device)).latent_dist
    # The trainer draws the posterior noise channels-last, as diffusers' Flax VAE keeps its moments.
    eps = _to_torch(draws["latent_eps"], device).permute(0, 3, 1, 2)
    latents = (posterior.mean + posterior.std * eps) * vae.config.scaling_factor
  noise = _to_torch(draws["noise"], device)
  timesteps = _to_torch(draws["timesteps"], device, torch.long)
  noisy = models["scheduler"].add_noise(latents, noise, timesteps)
  hidden = models["text_encoder"](_to_torch(batch["input_ids"], device, torch.long))[0]
  prediction = unet(noisy, timesteps, hidden).sample
  return torch.square(prediction.float() - noise).mean(dim=(1, 2, 3))


def _draws(models: dict, batch: dict, key) -> dict:
  res = batch["image"].shape[-1] // 2 ** (len(models["vae"].config.block_out_channels) - 1)
  shape = (models["unet"].config.in_channels, res, res)
  return trainer.example_draws(key, batch["index"], shape, models["scheduler"].config.num_train_timesteps)


def _weighted_mean(losses: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
  return (losses * weight).sum() / torch.clamp(weight.sum(), min=1.0)


@torch.no_grad()
def evaluate(models: dict, reader: BatchReader, *, batch_size: int, seed: int, device: torch.device) -> float:
  """Mean validation loss, the same batches and noise as `trainer.evaluate`."""
  key = trainer.validation_key(seed)
  total, count = 0.0, 0.0
  for positions in epoch_order(len(reader.examples), batch_size, seed=0, epoch=0, shuffle=False):
    batch = reader.batch(positions, epoch=0)
    weight = _to_torch(batch["weight"], device)
    total += float((per_example_loss(models, batch, _draws(models, batch, key), device) * weight).sum())
    count += float(weight.sum())
  return total / count


def prepare(config: Any, ours_workdir: Path, device: torch.device) -> dict:
  """The twin's models (text encoder with the pseudo-word rows), batch readers and AdamW, at step 0."""
  ft = config.finetune
  if Trainables.from_config(ft.trainables) != TEXTUAL_INVERSION:
    raise ValueError(f"the fine-tuning twin covers textual inversion ({TEXTUAL_INVERSION}); got {ft.trainables}")
  models = load_torch_sd(config.model)
  for name in ("unet", "vae", "text_encoder"):
    models[name].to(device)
  wnids, train_records, val_records, read_image = trainer.split_records(config.data, config.splits_dir, ours_workdir)
  _, classes = trainer.split_classes(config.splits_dir, ours_workdir, wnids)
  resolution = models["unet"].config.sample_size * 2 ** (len(models["vae"].config.block_out_channels) - 1)
  # The trainer's own batch fields: the pseudo-word kind's templates, tokenized with its extended tokenizer.
  reader_args = dict(
    read_image=read_image,
    resolution=resolution,
    conditioning=TEXTUAL_INVERSION.build(classes, models["tokenizer"]),
    seed=ft.seed,
  )
  embeddings = models["text_encoder"].text_model.embeddings
  table = embeddings.token_embedding.weight.detach().cpu().numpy()
  embeddings.token_embedding = PseudoWordEmbedding(
    embeddings.token_embedding, torch.from_numpy(pseudo_word.initial_embeddings(models["tokenizer"], table, classes))
  ).to(device)
  pseudo_words = embeddings.token_embedding.pseudo_words
  opt = ft.optimizer
  return {
    "models": models,
    "pseudo_words": pseudo_words,
    "train": BatchReader(trainer.make_examples(train_records, wnids, None), **reader_args),
    "validation": BatchReader(trainer.make_examples(val_records, wnids, None), **reader_args),
    "optimizer": torch.optim.AdamW(
      [pseudo_words], lr=ft.learning_rate.pseudo_words, betas=(opt.b1, opt.b2), eps=opt.eps, weight_decay=opt.weight_decay
    ),
  }


def train_step(twin: dict, batch: dict, key, *, max_grad_norm: float, device: torch.device) -> float:
  """One AdamW step of the pseudo-word rows on `batch` with the noise of `key`; returns the loss."""
  models, optimizer = twin["models"], twin["optimizer"]
  optimizer.zero_grad(set_to_none=True)
  loss = _weighted_mean(
    per_example_loss(models, batch, _draws(models, batch, key), device), _to_torch(batch["weight"], device)
  )
  loss.backward()
  torch.nn.utils.clip_grad_norm_([twin["pseudo_words"]], max_grad_norm)
  optimizer.step()
  return float(loss.detach())


def textual_inversion_twin(
  config: Any, ours_workdir: str | os.PathLike, out: str | os.PathLike, device: torch.device | None = None
) -> Path:
  """The twin of our finished textual-inversion run in `ours_workdir` (method config `config`), in `out`;
  returns the twin's metrics.jsonl (rewritten from scratch: the twin is a comparison, minutes at tiny
  scale; at paper scale limit the epochs with finetune.policy.max_epochs)."""
  ours_workdir, out = Path(ours_workdir), Path(out)
  ft = config.finetune
  progress = read_progress(ours_workdir)
  if progress is None:
    raise FileNotFoundError(f"{ours_workdir} holds no fine-tuning progress: run our fine-tuning trainer there first")
  epochs = [h["epoch"] for h in progress["history"]]
  device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
  twin = prepare(config, ours_workdir, device)
  rows, step = [], 0
  for epoch in epochs:
    order = epoch_order(len(twin["train"].examples), ft.batch_size, seed=ft.seed, epoch=epoch, shuffle=True)
    epoch_losses = []
    for step_in_epoch, batch in enumerate(
      tqdm(twin["train"].batches(order, epoch), total=len(order), desc=f"torch twin epoch {epoch}", leave=False)
    ):
      epoch_losses.append(
        train_step(
          twin,
          batch,
          trainer.train_step_key(ft.seed, epoch, step_in_epoch),
          max_grad_norm=ft.optimizer.max_grad_norm,
          device=device,
        )
      )
      step += 1
      rows.append({"step": step, "epoch": epoch, "train_loss": epoch_losses[-1]})
    val_loss = evaluate(twin["models"], twin["validation"], batch_size=ft.batch_size, seed=ft.seed, device=device)
    rows.append({"epoch": epoch, "step": step, "epoch_train_loss": float(np.mean(epoch_losses)), "val_loss": val_loss})
  metrics = out / trainer.METRICS_FILE
  io.atomic_write_text(metrics, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
  return metrics
