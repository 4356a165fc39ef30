"""Tiny random-init Stable Diffusion of the real SD v1.x classes, saved in the diffusers folder layout.

Tests, the tiny configs and the CPU benchmark use it in place of SD v1.4 weights (no model hub is
reachable): the same Flax classes (UNet, VAE, CLIP text encoder, safety checker), the real CLIP
tokenizer (49408 tokens, from jax_aug/assets), SD v1.4's PNDM scheduler config, and a CLIP image
processor. `build_tiny_sd_pt` saves the same architecture as a PyTorch pipeline, which `load_sd(...,
from_pt=True)` converts: that pair is how tests compare our engine with diffusers' PyTorch pipelines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_aug.diffusion import compat
from jax_aug.diffusion.loading import load_clip_tokenizer

compat.apply()

# Latents of 16x16; a two-level VAE halves resolution once, so images are 32x32 pixels.
TINY_RESOLUTION = 32
TINY_HIDDEN = 32

UNET_CONFIG: dict[str, Any] = dict(
  sample_size=TINY_RESOLUTION // 2,
  in_channels=4,
  out_channels=4,
  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
  block_out_channels=(32, 64),
  layers_per_block=1,
  attention_head_dim=8,
  cross_attention_dim=TINY_HIDDEN,
)
VAE_CONFIG: dict[str, Any] = dict(
  in_channels=3,
  out_channels=3,
  down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
  up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
  block_out_channels=(32, 64),
  layers_per_block=1,
  latent_channels=4,
  norm_num_groups=32,
  sample_size=TINY_RESOLUTION,
)
# vocab and special ids of the real CLIP tokenizer; the rest tiny.
TEXT_CONFIG: dict[str, Any] = dict(
  vocab_size=49408,
  hidden_size=TINY_HIDDEN,
  intermediate_size=37,
  num_hidden_layers=2,
  num_attention_heads=4,
  max_position_embeddings=77,
  projection_dim=TINY_HIDDEN,
  bos_token_id=49406,
  eos_token_id=49407,
  pad_token_id=49407,
)
VISION_CONFIG: dict[str, Any] = dict(
  hidden_size=TINY_HIDDEN,
  intermediate_size=37,
  num_hidden_layers=2,
  num_attention_heads=4,
  # diffusers loads the safety checker at CLIP's 224 px input shape, so only the width is tiny.
  image_size=224,
  patch_size=32,
  projection_dim=TINY_HIDDEN,
)
# SD v1.4's component configs (CompVis/stable-diffusion-v1-4, */config.json), shapes only: the GPU benchmark
# and the full-architecture equivalence test build random weights of these.
SD14_UNET = dict(
  sample_size=64,
  in_channels=4,
  out_channels=4,
  cross_attention_dim=768,
  attention_head_dim=8,
  block_out_channels=(320, 640, 1280, 1280),
  layers_per_block=2,
  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD14_VAE = dict(
  in_channels=3,
  out_channels=3,
  block_out_channels=(128, 256, 512, 512),
  layers_per_block=2,
  latent_channels=4,
  sample_size=512,
  down_block_types=("DownEncoderBlock2D",) * 4,
  up_block_types=("UpDecoderBlock2D",) * 4,
)
SD14_TEXT = dict(
  vocab_size=49408,
  hidden_size=768,
  intermediate_size=3072,
  num_hidden_layers=12,
  num_attention_heads=12,
  max_position_embeddings=77,
  projection_dim=768,
  hidden_act="quick_gelu",
  bos_token_id=49406,
  eos_token_id=49407,
  pad_token_id=49407,
)
SD14_SAFETY_VISION = dict(
  hidden_size=1024,
  intermediate_size=4096,
  num_hidden_layers=24,
  num_attention_heads=16,
  image_size=224,
  patch_size=14,
  projection_dim=768,
)
# SD v1.4's scheduler/scheduler_config.json.
SD14_SCHEDULER_CONFIG: dict[str, Any] = dict(
  num_train_timesteps=1000,
  beta_start=0.00085,
  beta_end=0.012,
  beta_schedule="scaled_linear",
  skip_prk_steps=True,
  steps_offset=1,
  set_alpha_to_one=False,
  trained_betas=None,
)


def safety_clip_config(text_config=None, vision_config=None):
  """CLIPConfig of the safety checker (its vision tower is what runs); tiny by default."""
  from transformers import CLIPConfig

  text_config = dict(text_config or TEXT_CONFIG)
  return CLIPConfig(
    text_config=text_config, vision_config=dict(vision_config or VISION_CONFIG), projection_dim=text_config["projection_dim"]
  )


def feature_extractor():
  from transformers import CLIPImageProcessor

  return CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})


def random_params(shapes: Any, rng: np.random.Generator) -> Any:
  """Random parameters for a tree of shapes, filled in numpy: compiling the models' own init functions
  takes about a minute on a busy 2-core CPU, this a fraction of a second.

  Dense/conv kernels ~ N(0, 1/fan_in) (LeCun normal, flax's default), embeddings ~ N(0, 0.02^2) (CLIP's),
  biases 0, norm scales 1, and the safety checker's concept embeddings and thresholds 1 (its own init:
  cosine scores never exceed 1, so nothing is flagged)."""
  from flax.traverse_util import flatten_dict, unflatten_dict

  def init(path, leaf):
    name = path[-1]
    if name in ("scale", "concept_embeds", "special_care_embeds", "concept_embeds_weights", "special_care_embeds_weights"):
      return np.ones(leaf.shape, np.float32)
    if name == "bias":
      return np.zeros(leaf.shape, np.float32)
    if name in ("embedding", "class_embedding"):
      return rng.normal(0.0, 0.02, leaf.shape).astype(np.float32)
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else leaf.shape[0]
    return rng.normal(0.0, fan_in**-0.5, leaf.shape).astype(np.float32)

  flat = flatten_dict(shapes)
  return unflatten_dict({path: jnp.asarray(init(path, leaf)) for path, leaf in flat.items()})


def _check_empty_target(path: Path) -> None:
  if path.exists() and any(path.iterdir()):
    raise FileExistsError(f"refusing to build a tiny SD into the non-empty directory {path}")


def build_tiny_sd(path: str | os.PathLike, *, seed: int = 0) -> Path:
  """Saves a tiny random-init Flax SD (diffusers layout, Flax weights) to `path` and returns it."""
  return build_random_sd(path, seed=seed)


def build_random_sd(
  path: str | os.PathLike, *, seed: int = 0, unet_config=None, vae_config=None, text_config=None, vision_config=None
) -> Path:
  """A random-init Flax SD of the given component configs (default: the tiny ones), e.g. SD v1.4's
  shapes for the GPU benchmark."""
  from diffusers import FlaxAutoencoderKL, FlaxPNDMScheduler, FlaxStableDiffusionPipeline, FlaxUNet2DConditionModel
  from diffusers.pipelines.stable_diffusion.safety_checker_flax import FlaxStableDiffusionSafetyChecker
  from transformers import CLIPTextConfig, FlaxCLIPTextModel

  path = Path(path)
  _check_empty_target(path)
  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  unet = FlaxUNet2DConditionModel(**(unet_config or UNET_CONFIG))
  unet_params = random_params(jax.eval_shape(unet.init_weights, key), rng)
  vae = FlaxAutoencoderKL(**(vae_config or VAE_CONFIG))
  vae_params = random_params(jax.eval_shape(vae.init_weights, key), rng)
  text_encoder = FlaxCLIPTextModel(CLIPTextConfig(**(text_config or TEXT_CONFIG)), _do_init=False)
  text_params = random_params(jax.eval_shape(lambda k: text_encoder.init_weights(k, (1, 77)), key), rng)
  safety_checker = FlaxStableDiffusionSafetyChecker(safety_clip_config(text_config, vision_config), _do_init=False)
  safety_params = random_params(jax.eval_shape(lambda k: safety_checker.init_weights(k, (1, 224, 224, 3)), key), rng)
  scheduler = FlaxPNDMScheduler(**SD14_SCHEDULER_CONFIG)
  pipeline = FlaxStableDiffusionPipeline(
    vae=vae,
    text_encoder=text_encoder,
    tokenizer=load_clip_tokenizer(),
    unet=unet,
    scheduler=scheduler,
    safety_checker=safety_checker,
    feature_extractor=feature_extractor(),
  )
  params = {"unet": unet_params, "vae": vae_params, "text_encoder": text_params, "safety_checker": safety_params}
  pipeline.save_pretrained(path, params=params)
  return path


def build_tiny_sd_pt(path: str | os.PathLike, *, seed: int = 0):
  """Saves the same tiny architecture as a PyTorch `StableDiffusionPipeline` (random init from
  `seed`), in .bin files because diffusers' PT->Flax conversion reads those; returns the pipeline so a
  test can run it as the reference. Needs torch (a test dependency)."""
  return build_random_sd_pt(path, seed=seed)


def build_random_sd_pt(
  path: str | os.PathLike, *, seed: int = 0, unet_config=None, vae_config=None, text_config=None, vision_config=None
):
  """`build_tiny_sd_pt` for any component configs (default: the tiny ones), e.g. SD v1.4's shapes."""
  import torch
  from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
  from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
  from transformers import CLIPTextConfig, CLIPTextModel

  path = Path(path)
  _check_empty_target(path)
  torch.manual_seed(seed)
  unet = UNet2DConditionModel(**(unet_config or UNET_CONFIG))
  vae = AutoencoderKL(**(vae_config or VAE_CONFIG))
  text_encoder = CLIPTextModel(CLIPTextConfig(**(text_config or TEXT_CONFIG)))
  safety_checker = StableDiffusionSafetyChecker(safety_clip_config(text_config, vision_config))
  pipeline = StableDiffusionPipeline(
    vae=vae,
    text_encoder=text_encoder,
    tokenizer=load_clip_tokenizer(),
    unet=unet,
    scheduler=PNDMScheduler(**SD14_SCHEDULER_CONFIG),
    safety_checker=safety_checker,
    feature_extractor=feature_extractor(),
    requires_safety_checker=True,
  )
  pipeline.save_pretrained(path, safe_serialization=False)
  return pipeline
