"""Conditioning of the U-Net: CLIP text encodings of prompts (possibly with learned pseudo-word tokens)
or precomputed encoder hidden states [77, hidden] (learned conditioning tensors)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np


class PromptTooLongError(ValueError):
  """A prompt needs more CLIP tokens than the text encoder's context (77 for SD v1.x)."""


def tokenize(tokenizer, prompts: Sequence[str]) -> np.ndarray:
  """Token ids [B, max_length] padded as SD does; refuses (never truncates) prompts that do not fit, so no
  image is silently conditioned on a cut prompt."""
  max_length = tokenizer.model_max_length
  ids = []
  for prompt in prompts:
    if not isinstance(prompt, str):
      raise TypeError(f"prompt {prompt!r} is a {type(prompt).__name__}, expected a string")
    tokens = tokenizer(prompt, padding="max_length", max_length=max_length, truncation=False).input_ids
    if len(tokens) > max_length:
      raise PromptTooLongError(
        f"prompt {prompt!r} is {len(tokens)} CLIP tokens (with start/end), more than the text encoder's {max_length}"
      )
    ids.append(tokens)
  return np.asarray(ids, dtype=np.int32)


def make_text_encoder_fn(text_encoder):
  """jit(params, ids [B, L]) -> last hidden states [B, L, hidden], what SD's U-Net cross-attends to."""

  @jax.jit
  def encode(params, input_ids):
    return text_encoder(input_ids, params=params, train=False)[0]

  return encode


def check_hidden_states(array: np.ndarray, *, length: int, hidden: int, what: str) -> np.ndarray:
  array = np.asarray(array)
  if array.shape != (length, hidden):
    raise ValueError(
      f"{what}: conditioning tensor of shape {list(array.shape)}, expected [{length}, {hidden}]"
      " (the text encoder's last hidden states for one prompt)"
    )
  if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
    raise ValueError(f"{what}: conditioning tensor must be finite floats, got dtype {array.dtype}")
  return array.astype(np.float32)
