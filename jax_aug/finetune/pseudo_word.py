"""Pseudo-words of textual inversion (methods 8 and 9): one new token per class.

The tokenizer gets one added token per class, `<wnid>`; the text encoder's token-embedding table gets one
row per new token, appended after CLIP's 49408 rows. Only those rows are trained: the trainer keeps them
as a separate [num_classes, hidden] array and concatenates it to the frozen table in the forward pass,
so the gradient and update of every original row are zero by construction (and the exported table's
original rows are bitwise the original).

Initialization (paper Sec. 3.2): the embedding of the last word of the class's first lemma ("tiger
shark" -> "shark"); when CLIP's BPE splits that word into several tokens, the mean of their embeddings.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from jax_aug.data.imagenet_classes import ClassInfo

TOKEN_EMBEDDING_PATH = ("text_model", "embeddings", "token_embedding", "embedding")


def placeholder(wnid: str) -> str:
  """The pseudo-word token of a class: `<n01491361>` (never a real word, so BPE cannot split it once
  it is added to the tokenizer)."""
  return f"<{wnid}>"


def init_word(cls: ClassInfo) -> str:
  """The last word of the first lemma: 'tiger shark' -> 'shark'."""
  return cls.lemmas[0].split()[-1]


def init_token_ids(tokenizer: Any, word: str) -> list[int]:
  ids = tokenizer(word, add_special_tokens=False).input_ids
  if not ids:
    raise ValueError(f"pseudo-word initializer {word!r} tokenizes to no tokens")
  return list(ids)


def initial_embeddings(tokenizer: Any, token_table: np.ndarray, classes: Sequence[ClassInfo]) -> np.ndarray:
  """[len(classes), hidden]: per class the mean embedding of its init word's tokens (float32)."""
  table = np.asarray(token_table, np.float32)
  return np.stack([table[init_token_ids(tokenizer, init_word(c))].mean(0) for c in classes])


def extend_tokenizer(tokenizer: Any, wnids: Sequence[str]) -> tuple[Any, list[int]]:
  """A copy of `tokenizer` with one added token per class; returns it and the new ids in class order.

  Refuses a placeholder that already exists: its id would then not be a fresh embedding row."""
  extended = copy.deepcopy(tokenizer)
  tokens = [placeholder(w) for w in wnids]
  clashes = [t for t in tokens if t in extended.get_vocab()]
  if clashes:
    raise ValueError(f"pseudo-word tokens {clashes[:3]} already exist in the tokenizer")
  added = extended.add_tokens(tokens)
  if added != len(tokens):
    raise ValueError(f"tokenizer added {added} of {len(tokens)} pseudo-word tokens")
  ids = extended.convert_tokens_to_ids(tokens)
  base = len(tokenizer)
  if ids != list(range(base, base + len(tokens))):
    raise ValueError(f"pseudo-word ids {ids[:3]}... are not appended after the {base} original tokens")
  return extended, ids


def get_token_table(text_params: Any) -> Any:
  node = text_params
  for key in TOKEN_EMBEDDING_PATH:
    node = node[key]
  return node


def with_token_table(text_params: Any, table: Any) -> dict:
  """Text-encoder params with the token-embedding table replaced (a new nested dict; shared leaves)."""

  def replace(node, path):
    if not path:
      return table
    return {**node, path[0]: replace(node[path[0]], path[1:])}

  return replace(dict(text_params), TOKEN_EMBEDDING_PATH)


def extended_table(frozen_table: Any, pseudo_words: Any) -> Any:
  return jnp.concatenate([frozen_table, pseudo_words.astype(frozen_table.dtype)], axis=0)


def extended_text_encoder(text_encoder: Any, num_new_tokens: int) -> Any:
  """The same CLIP text model class with `vocab_size` grown by the pseudo-words (parameters are
  passed at call time; nothing is initialized)."""
  config = copy.deepcopy(text_encoder.config)
  config.vocab_size = text_encoder.config.vocab_size + num_new_tokens
  return type(text_encoder)(config, dtype=text_encoder.dtype, _do_init=False)
