"""The mini world's Stable Diffusion as a diffusers folder, so it loads through `jax_aug.diffusion.loading.load_sd`
like real SD v1.4 weights: the tiny CLIP's text tower as text encoder, the trained VAE (with its scaling
factor) and U-Net, the fitted safety checker, the real CLIP tokenizer, SD v1.4's PNDM scheduler config and
the safety checker's image processor (models.safety_feature_extractor).
"""

from __future__ import annotations

import os
from pathlib import Path

from jax_aug.diffusion.loading import load_clip_tokenizer
from jax_aug.diffusion.tiny import SD14_SCHEDULER_CONFIG
from jax_aug.io import read_json
from jax_aug.mini_world import heads, models
from jax_aug.mini_world.weights import load_params

WEIGHTS = "weights.safetensors"


def assemble_sd(export: str | os.PathLike, out: str | os.PathLike) -> Path:
  """Writes the diffusers folder of the weights exported under `export` (clip/, vae/, unet/,
  safety_checker/) to `out` and returns `out`."""
  from diffusers import FlaxAutoencoderKL, FlaxPNDMScheduler, FlaxStableDiffusionPipeline, FlaxUNet2DConditionModel
  from transformers import CLIPTextConfig, FlaxCLIPModel, FlaxCLIPTextModel

  export, out = Path(export), Path(out)
  missing = [
    p
    for p in ("clip", "vae/" + WEIGHTS, "vae/config.json", "unet/" + WEIGHTS, "safety_checker/" + WEIGHTS)
    if not (export / p).exists()
  ]
  if missing:
    raise FileNotFoundError(f"{export} lacks {missing}: run scripts/train_mini_world.py's stages first")
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f"refusing to assemble the mini-world SD into the non-empty directory {out}")
  clip = FlaxCLIPModel.from_pretrained(export / "clip")
  pipeline = FlaxStableDiffusionPipeline(
    vae=FlaxAutoencoderKL.from_config(read_json(export / "vae" / "config.json")),
    text_encoder=FlaxCLIPTextModel(CLIPTextConfig(**models.CLIP_TEXT), _do_init=False),
    tokenizer=load_clip_tokenizer(),
    unet=FlaxUNet2DConditionModel(**models.UNET),
    scheduler=FlaxPNDMScheduler(**SD14_SCHEDULER_CONFIG),
    safety_checker=heads.build_safety_checker(),
    feature_extractor=models.safety_feature_extractor(),
  )
  params = {
    "text_encoder": {"text_model": clip.params["text_model"]},
    "vae": load_params(export / "vae" / WEIGHTS),
    "unet": load_params(export / "unet" / WEIGHTS),
    "safety_checker": load_params(export / "safety_checker" / WEIGHTS),
  }
  pipeline.save_pretrained(out, params=params)
  return out
