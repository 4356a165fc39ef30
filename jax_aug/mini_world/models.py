"""The mini world's model architectures: transformers' Flax CLIP and diffusers' Flax VAE / U-Net at sizes
that train on 2 CPU cores (docs/mini_world.md, "Models"). Shapes only; training is jax_aug/mini_world/train.py.
"""

from __future__ import annotations

from typing import Any

from jax_aug.diffusion import tiny
from jax_aug.mini_world.concepts import IMAGE_SIZE

# Captions are short: CLIP trains on the first CAPTION_TOKENS tokens; the text tower keeps CLIP's 77
# positions so SD's pipeline (which pads to 77) runs it unchanged. The causal mask makes the pooled
# (end-of-text) feature independent of padding beyond the caption.
CAPTION_TOKENS = 32
TEXT_WIDTH = 64
PROJECTION_DIM = 64

CLIP_TEXT: dict[str, Any] = dict(
  vocab_size=49408,
  hidden_size=TEXT_WIDTH,
  intermediate_size=4 * TEXT_WIDTH,
  num_hidden_layers=4,
  num_attention_heads=4,
  max_position_embeddings=77,
  bos_token_id=49406,
  eos_token_id=49407,
  pad_token_id=49407,
)
CLIP_VISION: dict[str, Any] = dict(
  hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=4
)
# Three levels: x4 downsampling, 8 x 8 x 4 latents. Sized by the mini study's budget (docs/mini_world.md,
# "Sizing the U-Net by the study's budget"): on 2 CPU cores the U-Net on 8 x 8 latents evaluates 1,100
# images/s against 116 on 16 x 16 (whose self-attention over 256 positions dominates), so the study's
# sampling fits its minutes and the U-Net trains on a CPU in hours.
VAE: dict[str, Any] = dict(
  tiny.VAE_CONFIG,
  down_block_types=("DownEncoderBlock2D",) * 3,
  up_block_types=("UpDecoderBlock2D",) * 3,
  block_out_channels=(32, 64, 64),
  sample_size=IMAGE_SIZE,
)
LATENT_SIZE = IMAGE_SIZE // 2 ** (len(VAE["block_out_channels"]) - 1)
UNET: dict[str, Any] = dict(tiny.UNET_CONFIG, sample_size=LATENT_SIZE, cross_attention_dim=TEXT_WIDTH)
# CLIP's image normalisation (CLIPImageProcessor's defaults).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# diffusers' safety checker is always built at CLIP's 224 px input (FlaxStableDiffusionSafetyChecker's fixed
# default input shape when a pipeline loads it). Its vision tower sees the 32 px image upscaled x7 by
# nearest neighbour, in 28 px patches: each patch is one 4 px patch of the original with every pixel repeated
# 7 x 7, so a patch kernel repeated 7 x 7 and divided by 49 computes exactly the tiny CLIP's patch embedding
# (`jax_aug.mini_world.heads.safety_checker_params`), and the 8 x 8 + 1 positions are the same.
SAFETY_UPSCALE = 224 // IMAGE_SIZE
SAFETY_VISION: dict[str, Any] = dict(
  CLIP_VISION, image_size=IMAGE_SIZE * SAFETY_UPSCALE, patch_size=CLIP_VISION["patch_size"] * SAFETY_UPSCALE
)


def clip_config():
  from transformers import CLIPConfig

  return CLIPConfig(text_config=dict(CLIP_TEXT), vision_config=dict(CLIP_VISION), projection_dim=PROJECTION_DIM)


def safety_config():
  from transformers import CLIPConfig

  return CLIPConfig(text_config=dict(CLIP_TEXT), vision_config=dict(SAFETY_VISION), projection_dim=PROJECTION_DIM)


def safety_feature_extractor():
  """The safety checker's preprocessing: nearest-neighbour upscaling to 224 px (exact pixel repetition for
  32 px images), CLIP mean/std."""
  from PIL import Image
  from transformers import CLIPImageProcessor

  size = SAFETY_VISION["image_size"]
  return CLIPImageProcessor(
    size={"shortest_edge": size},
    crop_size={"height": size, "width": size},
    resample=Image.Resampling.NEAREST,
    image_mean=list(CLIP_MEAN),
    image_std=list(CLIP_STD),
  )


def image_processor():
  """CLIP's preprocessing at the world's 32 px (resize shorter side, centre crop, CLIP mean/std)."""
  from transformers import CLIPImageProcessor

  return CLIPImageProcessor(
    size={"shortest_edge": IMAGE_SIZE},
    crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    image_mean=list(CLIP_MEAN),
    image_std=list(CLIP_STD),
  )
