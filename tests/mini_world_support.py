"""Trained-weights stand-ins for the mini world's tests: random weights of the shipped models' exact shapes,
written where and as scripts/train_mini_world.py writes them."""

import jax
import numpy as np

from jax_aug.mini_world import heads
from jax_aug.mini_world.weights import save_params


def random_clip(seed):
  """A tiny CLIP with LeCun-normal weights: the models' own init maps distinct images to nearly one
  embedding (cosines ~0.9999), which diffusers' 3-decimal rounding cannot tell apart."""
  from jax_aug.diffusion.tiny import random_params
  from jax_aug.mini_world.train_clip import build_clip

  clip = build_clip(seed=seed)
  params = random_params({k: v for k, v in clip.params.items() if k != "logit_scale"}, np.random.default_rng(seed))
  return clip, dict(params, logit_scale=clip.params["logit_scale"])


def random_export(export):
  """An export folder as scripts/train_mini_world.py leaves it (clip/, vae/, unet/, safety_checker/, manifest),
  with random weights; returns the parameters written."""
  from jax_aug.diffusion.loading import load_clip_tokenizer
  from jax_aug.diffusion.tiny import random_params
  from jax_aug.io import atomic_write_json
  from jax_aug.mini_world.assemble import WEIGHTS
  from jax_aug.mini_world.train import record_export
  from jax_aug.mini_world.train_clip import export_clip
  from jax_aug.mini_world.train_unet import build_unet
  from jax_aug.mini_world.train_vae import build_vae

  clip, clip_params = random_clip(3)
  folder = export_clip(clip, clip_params, load_clip_tokenizer(), export / "clip")
  rng = np.random.default_rng(0)
  vae, unet = build_vae(), build_unet()
  vae_params = random_params(jax.eval_shape(vae.init_weights, jax.random.key(0)), rng)
  unet_params = random_params(jax.eval_shape(unet.init_weights, jax.random.key(0)), rng)
  save_params(export / "vae" / WEIGHTS, vae_params)
  atomic_write_json(
    export / "vae" / "config.json", {k: v for k, v in dict(vae.config, scaling_factor=0.5).items() if not k.startswith("_")}
  )
  save_params(export / "unet" / WEIGHTS, unet_params)
  save_params(
    export / "safety_checker" / WEIGHTS, heads.safety_checker_params(clip_params, np.ones(64, np.float32) / 8, 0.9)
  )
  out = export.parent  # record_export writes <out>/export/manifest.json
  assert export == out / "export"
  record_export(out, "clip", [p for p in folder.iterdir() if p.is_file()])
  record_export(out, "vae", [export / "vae" / WEIGHTS, export / "vae" / "config.json"])
  record_export(out, "unet", [export / "unet" / WEIGHTS])
  record_export(out, "safety", [export / "safety_checker" / WEIGHTS])
  return {"clip": clip_params, "vae": vae_params, "unet": unet_params}
