"""The CLIP model of the retrieval: text tower for the queries, image tower for index building and the
aesthetic predictor, both in JAX (FlaxCLIPModel) on CPU or accelerator.

The paper queries with "the same CLIP-like model used in the DM": SD v1.4's text encoder is the text
tower of OpenAI's CLIP ViT-L/14, and LAION-5B's kNN index holds ViT-L/14 image embeddings, so the full
two-tower `openai/clip-vit-large-patch14` (a local folder or hub id) is loaded here. Features are the
projected embeddings (`get_text_features` / `get_image_features`), L2-normalized, float32.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from jax_aug.diffusion.loading import load_clip_tokenizer


@dataclasses.dataclass(frozen=True)
class ClipModel:
  model: Any  # transformers.FlaxCLIPModel (modules are stateless; weights live in `params`)
  params: Any
  tokenizer: Any
  image_processor: Any
  name: str

  @property
  def embedding_dim(self) -> int:
    return int(self.model.config.projection_dim)


def load_clip(path_or_hub_id: str, *, from_pt: bool = False) -> ClipModel:
  """Loads a two-tower CLIP (e.g. openai/clip-vit-large-patch14) with its tokenizer and image processor."""
  from transformers import CLIPImageProcessor, CLIPTokenizer, FlaxCLIPModel

  try:
    model = FlaxCLIPModel.from_pretrained(path_or_hub_id, from_pt=from_pt)
  except OSError as e:
    raise FileNotFoundError(
      f"cannot load a CLIP model from {path_or_hub_id!r}: expected a local folder or hub id with a"
      f" FlaxCLIPModel (flax_model.msgpack, or PyTorch weights with from_pt=True) ({e})"
    ) from e
  return ClipModel(
    model=model,
    params=model.params,
    tokenizer=CLIPTokenizer.from_pretrained(path_or_hub_id),
    image_processor=CLIPImageProcessor.from_pretrained(path_or_hub_id),
    name=str(path_or_hub_id),
  )


def tiny_clip_config(image_size: int = 32, hidden: int = 32):
  """The architecture of CLIP ViT-L/14 (real 49408-token vocabulary) at tiny sizes, for tests and the
  tiny config."""
  from transformers import CLIPConfig

  text = dict(
    vocab_size=49408,
    hidden_size=hidden,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
  )
  vision = dict(
    hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=image_size, patch_size=8
  )
  return CLIPConfig(text_config=text, vision_config=vision, projection_dim=hidden)


def build_tiny_clip(seed: int = 0, image_size: int = 32) -> ClipModel:
  """A random-init tiny FlaxCLIPModel with the real CLIP tokenizer (no weights needed)."""
  from transformers import CLIPImageProcessor, FlaxCLIPModel

  model = FlaxCLIPModel(tiny_clip_config(image_size), seed=seed)
  processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
  return ClipModel(
    model=model,
    params=model.params,
    tokenizer=load_clip_tokenizer(),
    image_processor=processor,
    name=f"tiny-random-clip(seed={seed})",
  )


def _normalize(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


@functools.partial(jax.jit, static_argnums=0)
def _text_features(model, params, input_ids, attention_mask):
  return _normalize(model.get_text_features(input_ids, attention_mask, params=params))


@functools.partial(jax.jit, static_argnums=0)
def _image_features(model, params, pixel_values):
  return _normalize(model.get_image_features(pixel_values, params=params))


# Prompts per call of the text tower: one compiled shape for every batch (the plan compiles this one).
EMBED_TEXTS_BATCH = 64


def embed_texts(clip: ClipModel, texts: Sequence[str], batch_size: int = EMBED_TEXTS_BATCH) -> np.ndarray:
  """L2-normalized text features [N, D] (float32) of `texts`, padded to CLIP's 77 tokens."""
  if isinstance(texts, str):
    raise TypeError("embed_texts takes a list of strings, got one string")
  out = []
  for start in range(0, len(texts), batch_size):
    batch = list(texts[start : start + batch_size])
    tokens = clip.tokenizer(
      batch,
      padding="max_length",
      truncation=True,
      max_length=clip.model.config.text_config.max_position_embeddings,
      return_tensors="np",
    )
    # Fixed batch shape: one compilation for every batch.
    pad = batch_size - len(batch)
    ids = np.pad(tokens["input_ids"], ((0, pad), (0, 0)), constant_values=clip.tokenizer.pad_token_id)
    mask = np.pad(tokens["attention_mask"], ((0, pad), (0, 0)))
    out.append(np.asarray(_text_features(clip.model, clip.params, ids, mask))[: len(batch)])
  return np.concatenate(out) if out else np.zeros((0, clip.embedding_dim), np.float32)


def embed_images(
  clip: ClipModel, images: Sequence[Image.Image | np.ndarray], batch_size: int = 32, progress: str | None = None
) -> np.ndarray:
  """L2-normalized image features [N, D] (float32), with CLIP's own preprocessing (resize, center crop,
  mean/std normalization by the model's image processor). `progress`: a progress bar's label (none without)."""
  out = []
  starts = range(0, len(images), batch_size)
  for start in tqdm(starts, desc=progress, unit="batch") if progress else starts:
    batch = list(images[start : start + batch_size])
    pixels = clip.image_processor(images=batch, return_tensors="np")["pixel_values"]
    pixels = np.pad(pixels, ((0, batch_size - len(batch)), (0, 0), (0, 0), (0, 0)))
    out.append(np.asarray(_image_features(clip.model, clip.params, pixels))[: len(batch)])
  return np.concatenate(out) if out else np.zeros((0, clip.embedding_dim), np.float32)
