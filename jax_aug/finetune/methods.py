"""What each of the five personalization methods trains and how it builds the U-Net's conditioning.

A method is three config fields (configs/methods/<method>.py):

  conditioning        "tensor": learned encoder hidden states [77, hidden], one per (class, cluster),
                      initialized from the text encoding of the class's no-ws simple prompt (5, 6, 7);
                      "pseudo_word": one new token embedding per class, fed through the frozen CLIP text
                      encoder inside textual-inversion templates (8, 9).
  clusters_per_class  1, or k of FT cluster conditioning (6): the subset images of a class are split by
                      k-means on Inception-v3 features, one conditioning per cluster.
  train_unet          whether the U-Net trains jointly (7 Imagic, 9 pseudo-word + DM).

The VAE and every text-encoder weight other than the new pseudo-word rows are always frozen.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_aug.data import prompts
from jax_aug.data.imagenet_classes import ClassInfo
from jax_aug.finetune import pseudo_word

CONDITIONINGS = ("tensor", "pseudo_word")


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  conditioning: str
  clusters_per_class: int
  train_unet: bool

  def __post_init__(self):
    if self.conditioning not in CONDITIONINGS:
      raise ValueError(f"unknown conditioning {self.conditioning!r}: expected one of {CONDITIONINGS}")
    if self.clusters_per_class < 1:
      raise ValueError(f"clusters_per_class must be >= 1, got {self.clusters_per_class}")
    if self.conditioning == "pseudo_word" and self.clusters_per_class != 1:
      raise ValueError("pseudo-word methods learn one token per class; clusters_per_class must be 1")

  @property
  def trainable_groups(self) -> tuple[str, ...]:
    """The trainable parts, each with its own learning rate (the keys of `initial_trainable`)."""
    return ("conditioning" if self.conditioning == "tensor" else "pseudo_words",) + (("unet",) if self.train_unet else ())

  @classmethod
  def from_config(cls, config: Any) -> "MethodSpec":
    return cls(config.conditioning, int(config.clusters_per_class), bool(config.train_unet))


def conditioning_index(label: int, cluster: int, clusters_per_class: int) -> int:
  """Row of the conditioning table for (class label, cluster)."""
  return label * clusters_per_class + cluster


def encode_prompts(text_encoder: Any, text_params: Any, tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
  """CLIP text-encoder last hidden states [len(texts), 77, hidden] (float32), as SD conditions on them."""
  ids = tokenize(tokenizer, texts)
  return np.asarray(text_encoder(ids, params=text_params)[0], np.float32)


def tokenize(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
  """[len(texts), 77] int32 ids padded to the model length; refuses prompts that would be cut."""
  max_length = tokenizer.model_max_length
  ids = tokenizer(list(texts), padding="max_length", max_length=max_length, truncation=False,
                  return_tensors="np").input_ids
  if ids.shape[1] != max_length:
    longest = max(texts, key=lambda t: len(tokenizer(t).input_ids))
    raise ValueError(f"prompt {longest!r} tokenizes beyond CLIP's {max_length} tokens")
  return ids.astype(np.int32)


def initial_trainable(spec: MethodSpec, classes: Sequence[ClassInfo], *, text_encoder: Any,
                      text_params: Any, tokenizer: Any, unet_params: Any) -> dict:
  """The trainable tree at step 0 (float32 master copies).

  "conditioning": [num_classes * k, 77, hidden], row label*k + cluster = encoding of the no-ws simple
  prompt of the class; "pseudo_words": [num_classes, hidden]; "unet" when the U-Net trains."""
  trainable = {}
  if spec.conditioning == "tensor":
    encoded = encode_prompts(text_encoder, text_params, tokenizer, [prompts.simple_no_ws(c) for c in classes])
    trainable["conditioning"] = jnp.asarray(np.repeat(encoded, spec.clusters_per_class, axis=0))
  else:
    table = pseudo_word.get_token_table(text_params)
    trainable["pseudo_words"] = jnp.asarray(pseudo_word.initial_embeddings(tokenizer, table, classes))
  if spec.train_unet:
    trainable["unet"] = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), unet_params)
  return trainable


def encoder_hidden_states(spec: MethodSpec, trainable: dict, frozen: dict, batch: dict,
                          text_module: Any) -> jax.Array:
  """The U-Net's cross-attention input for a batch: a gather from the learned conditioning table, or
  the text encoder run over template prompts with the learned pseudo-word rows appended to its table.

  `text_module` is the extended CLIP text module (flax.linen) for pseudo-word methods, else unused."""
  if spec.conditioning == "tensor":
    return trainable["conditioning"][batch["conditioning_index"]]
  table = pseudo_word.extended_table(pseudo_word.get_token_table(frozen["text_encoder"]),
                                     trainable["pseudo_words"])
  params = pseudo_word.with_token_table(frozen["text_encoder"], table)
  ids = batch["input_ids"]
  positions = jnp.broadcast_to(jnp.arange(ids.shape[-1]), ids.shape)
  return text_module.apply({"params": params}, ids, jnp.ones_like(ids), positions)[0]
