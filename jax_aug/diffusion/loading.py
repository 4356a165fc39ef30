"""Loads a Flax Stable Diffusion v1.x (weights + tokenizer + scheduler + safety checker) from a local
diffusers folder or a hub id, in float32 or bfloat16.

Real SD v1.4 weights come from a user's disk or the hub (`revision="flax"`, or `from_pt=True` for the
PyTorch weights); tests use `jax_aug.diffusion.tiny.build_tiny_sd`, the same classes at tiny sizes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jax_aug.diffusion import compat

compat.apply()

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
REQUIRED_COMPONENTS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")
CLIP_MAX_LENGTH = 77
CLIP_TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "assets" / "clip_tokenizer"


class NotADiffusersLayoutError(ValueError):
  """A weight directory exists but is not a diffusers Stable Diffusion folder."""


def load_clip_tokenizer(path: str | os.PathLike | None = None):
  """CLIP's BPE tokenizer as SD v1.x configures it (77 tokens, padded with <|endoftext|>).

  Without `path`, the package copy built by scripts/make_clip_tokenizer.py (no network needed)."""
  from transformers import CLIPTokenizer

  if path is not None:
    return CLIPTokenizer.from_pretrained(path)
  folder = CLIP_TOKENIZER_DIR
  return CLIPTokenizer(
    str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=CLIP_MAX_LENGTH, pad_token="<|endoftext|>"
  )


@dataclasses.dataclass(frozen=True)
class StableDiffusion:
  """The Flax modules of one SD checkpoint and their parameters.

  `params` has keys "text_encoder", "unet", "vae", "safety_checker" (None without one) and
  "scheduler" (the scheduler's state). Modules are stateless; swap `params` / `tokenizer` (see
  `with_overrides`) to sample from fine-tuned weights with the same compiled functions.
  """

  tokenizer: Any
  text_encoder: Any
  unet: Any
  vae: Any
  scheduler: Any
  safety_checker: Any
  feature_extractor: Any
  params: dict
  checkpoint: str
  dtype: str = "float32"

  @property
  def vae_scale_factor(self) -> int:
    return 2 ** (len(self.vae.config.block_out_channels) - 1)

  @property
  def resolution(self) -> int:
    """Native image size: the UNet's latent size times the VAE's downsampling."""
    return self.unet.config.sample_size * self.vae_scale_factor

  def with_overrides(
    self, *, tokenizer=None, text_encoder_params=None, unet_params=None, checkpoint: str | None = None
  ) -> StableDiffusion:
    """The same model with a fine-tuned tokenizer (added pseudo-word tokens), text-encoder or UNet
    parameters; `checkpoint` names them in the augmentation set's provenance."""
    params = dict(self.params)
    if text_encoder_params is not None:
      params["text_encoder"] = text_encoder_params
    if unet_params is not None:
      params["unet"] = unet_params
    return dataclasses.replace(
      self,
      tokenizer=tokenizer if tokenizer is not None else self.tokenizer,
      params=params,
      checkpoint=checkpoint if checkpoint is not None else self.checkpoint,
    )


def _is_local(path_or_hub_id: str) -> bool:
  """Hub ids look like "owner/name"; anything else (absolute, ./, ~, deeper paths) is a local path."""
  if os.path.exists(path_or_hub_id):
    return True
  parts = path_or_hub_id.split("/")
  return (
    path_or_hub_id.startswith((".", "/", "~"))
    or len(parts) != 2
    or not all(parts)
    or os.sep != "/"
    and os.sep in path_or_hub_id
  )


def check_diffusers_layout(path: Path) -> dict:
  """Returns model_index.json of a local SD folder, or raises an error naming what is missing."""
  if not path.exists():
    raise FileNotFoundError(f"Stable Diffusion weight directory not found: {path}")
  if not path.is_dir():
    raise NotADiffusersLayoutError(f"{path} is a file; expected a diffusers pipeline directory")
  index_path = path / "model_index.json"
  if not index_path.is_file():
    raise NotADiffusersLayoutError(
      f"{path} is not a diffusers pipeline directory: no model_index.json (expected it beside the "
      f"folders {', '.join(REQUIRED_COMPONENTS)})"
    )
  try:
    index = json.loads(index_path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise NotADiffusersLayoutError(f"{index_path} is not valid JSON ({e.msg})") from e
  missing = [
    c for c in REQUIRED_COMPONENTS if not isinstance(index.get(c), list) or index[c][0] is None or not (path / c).is_dir()
  ]
  if missing:
    raise NotADiffusersLayoutError(
      f"{path} is not a Stable Diffusion pipeline: components {missing} are missing from model_index.json or have no folder"
    )
  return index


def load_sd(
  path_or_hub_id: str | os.PathLike, *, dtype: str = "float32", revision: str | None = None, from_pt: bool = False
) -> StableDiffusion:
  """Loads SD from a local diffusers folder or a hub id (`revision="flax"` for the Flax weights of
  CompVis/stable-diffusion-v1-4, or `from_pt=True` to convert the PyTorch ones).

  bfloat16 casts UNet, VAE and text-encoder weights and computes in bfloat16; the safety checker
  stays float32 (it decides what is kept, and costs little)."""
  from diffusers import FlaxStableDiffusionPipeline

  if dtype not in DTYPES:
    raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
  source = os.fspath(path_or_hub_id)
  if _is_local(source):
    check_diffusers_layout(Path(source).expanduser())
    source = str(Path(source).expanduser())
  jdtype = DTYPES[dtype]
  pipeline, params = FlaxStableDiffusionPipeline.from_pretrained(source, revision=revision, from_pt=from_pt, dtype=jdtype)
  params = dict(params)
  if jdtype != jnp.float32:
    params["unet"] = pipeline.unet.to_bf16(params["unet"])
    params["vae"] = pipeline.vae.to_bf16(params["vae"])
    params["text_encoder"] = pipeline.text_encoder.to_bf16(params["text_encoder"])
  params.setdefault("safety_checker", None)
  params["scheduler"] = params.get("scheduler") or pipeline.scheduler.create_state()
  checkpoint = source if revision is None else f"{source}@{revision}"
  return StableDiffusion(
    tokenizer=pipeline.tokenizer,
    text_encoder=pipeline.text_encoder,
    unet=pipeline.unet,
    vae=pipeline.vae,
    scheduler=pipeline.scheduler,
    safety_checker=pipeline.safety_checker,
    feature_extractor=pipeline.feature_extractor,
    params=jax.tree.map(jnp.asarray, params),
    checkpoint=checkpoint,
    dtype=dtype,
  )


def load_configured(model_config, workdir: str | os.PathLike) -> StableDiffusion:
  """SD from a config's model block (path, revision, from_pt, dtype, tiny_seed); an empty path builds the
  tiny random SD once into <workdir>/tiny_sd (a build cut short is redone)."""
  import shutil

  from jax_aug.diffusion import tiny

  path = model_config.path
  if not path:
    path = Path(workdir) / "tiny_sd"
    if not (path / "model_index.json").exists():
      shutil.rmtree(path, ignore_errors=True)
      tiny.build_tiny_sd(path, seed=model_config.tiny_seed)
  return load_sd(path, dtype=model_config.dtype, revision=model_config.revision or None, from_pt=model_config.from_pt)
