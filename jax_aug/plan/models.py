"""The models of a config as shapes only: what the plan needs to compile their steps, without their weights.

A plan runs before the weights are downloaded (and SD v1.4 in float32 alone is 4 GB), so the modules are
built from the component configs and every parameter is a `jax.ShapeDtypeStruct` of the dtype the
production loader gives it (`jax_aug.diffusion.loading.load_sd`: bfloat16 casts U-Net, VAE and text
encoder). Component configs come from, in order: an empty path (the tiny random SD / CLIP of the tiny
configs), a local folder (its */config.json files, weights not read), or the one hub id each of SD and
CLIP the paper uses (SD v1.4's / CLIP ViT-L/14's configs, copied in jax_aug/diffusion/tiny.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp

from jax_aug.diffusion import tiny
from jax_aug.diffusion.loading import DTYPES, StableDiffusion, load_clip_tokenizer
from jax_aug.retrieval.clip_model import ClipModel, tiny_clip_config

SD14_HUB_ID = "CompVis/stable-diffusion-v1-4"
CLIP_VIT_L14_HUB_ID = "openai/clip-vit-large-patch14"


def _read_json(path: Path) -> dict:
  if not path.is_file():
    raise FileNotFoundError(f"planning needs {path} (the component's config; its weights are not read)")
  return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if not k.startswith("_")}


def _sd_component_configs(model_config) -> tuple[dict, dict, dict, dict, str | None]:
  """(unet, vae, text encoder, scheduler) configs and the tokenizer folder (None: the package copy)."""
  path = model_config.path
  if not path:
    return tiny.UNET_CONFIG, tiny.VAE_CONFIG, tiny.TEXT_CONFIG, tiny.SD14_SCHEDULER_CONFIG, None
  if Path(path).expanduser().is_dir():
    folder = Path(path).expanduser()
    return (
      _read_json(folder / "unet" / "config.json"),
      _read_json(folder / "vae" / "config.json"),
      _read_json(folder / "text_encoder" / "config.json"),
      _read_json(folder / "scheduler" / "scheduler_config.json"),
      str(folder / "tokenizer"),
    )
  if path == SD14_HUB_ID:
    return tiny.SD14_UNET, tiny.SD14_VAE, tiny.SD14_TEXT, tiny.SD14_SCHEDULER_CONFIG, None
  raise ValueError(
    f"cannot plan model.path={path!r}: expected empty (tiny), a local diffusers folder, or"
    f" {SD14_HUB_ID!r} (its shapes are known without the hub)"
  )


def stable_diffusion(model_config) -> StableDiffusion:
  """The SD of a config's model block (configs/base/diffusion.py) with ShapeDtypeStruct parameters; the
  scheduler state is concrete (a few small arrays), there is no safety checker."""
  from diffusers import FlaxAutoencoderKL, FlaxPNDMScheduler, FlaxUNet2DConditionModel
  from transformers import CLIPTextConfig, FlaxCLIPTextModel

  if model_config.dtype not in DTYPES:
    raise ValueError(f"unknown dtype {model_config.dtype!r}; expected one of {sorted(DTYPES)}")
  dtype = DTYPES[model_config.dtype]
  unet_config, vae_config, text_config, scheduler_config, tokenizer_dir = _sd_component_configs(model_config)
  key = jax.random.key(0)
  unet = FlaxUNet2DConditionModel.from_config(unet_config, dtype=dtype)
  vae = FlaxAutoencoderKL.from_config(vae_config, dtype=dtype)
  text_encoder = FlaxCLIPTextModel(CLIPTextConfig(**text_config), dtype=dtype, _do_init=False)
  # load_sd stores every floating parameter of these three in the compute dtype.
  cast = lambda tree: jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, dtype if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype), tree
  )
  scheduler = FlaxPNDMScheduler.from_config(scheduler_config)
  params = {
    "unet": cast(jax.eval_shape(unet.init_weights, key)),
    "vae": cast(jax.eval_shape(vae.init_weights, key)),
    "text_encoder": cast(jax.eval_shape(lambda k: text_encoder.init_weights(k, (1, 77)), key)),
    "safety_checker": None,
    "scheduler": scheduler.create_state(),
  }
  return StableDiffusion(
    tokenizer=load_clip_tokenizer(tokenizer_dir),
    text_encoder=text_encoder,
    unet=unet,
    vae=vae,
    scheduler=scheduler,
    safety_checker=None,
    feature_extractor=None,
    params=params,
    checkpoint=f"shapes of {model_config.path or 'the tiny SD'}",
    dtype=model_config.dtype,
  )


def clip(name: str, tiny_image_size: int = 32) -> ClipModel:
  """The CLIP `name` (a `clip.model` of configs/base/retrieval.py: "tiny", a folder, or ViT-L/14's hub id)
  with ShapeDtypeStruct parameters (float32, as load_clip gives them)."""
  from transformers import CLIPConfig, FlaxCLIPModel

  if name == "tiny":
    config = tiny_clip_config(tiny_image_size)
  elif Path(name).expanduser().is_dir():
    config = CLIPConfig.from_pretrained(Path(name).expanduser())
  elif name == CLIP_VIT_L14_HUB_ID:
    # SD v1.4's text encoder is ViT-L/14's text tower, its safety checker's vision tower ViT-L/14's.
    config = CLIPConfig(text_config=tiny.SD14_TEXT, vision_config=tiny.SD14_SAFETY_VISION, projection_dim=768)
  else:
    raise ValueError(f"cannot plan clip.model={name!r}: expected 'tiny', a local folder, or {CLIP_VIT_L14_HUB_ID!r}")
  model = FlaxCLIPModel(config, _do_init=False)
  shapes = jax.eval_shape(lambda k: model.init_weights(k, model.input_shape), jax.random.key(0))
  return ClipModel(
    model=model, params=shapes, tokenizer=load_clip_tokenizer(), image_processor=None, name=f"shapes of {name}"
  )
