"""Learned conditioning tensors (FT conditioning, FT cluster conditioning, Imagic: methods 5, 6, 7).

One [77, hidden] tensor per (class, cluster) replaces the text encoder's output: the table's row
label * k + cluster, initialized from the CLIP encoding of the class's no-ws simple prompt ("A photo of
w(n)."; every cluster of a class starts from its class's row). The text encoder is not used in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from jax_aug.data import prompts
from jax_aug.finetune import trainables


def encode_prompts(text_encoder: Any, text_params: Any, tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
  """CLIP text-encoder last hidden states [len(texts), 77, hidden] (float32), as SD conditions on them."""
  ids = trainables.tokenize(tokenizer, texts)
  return np.asarray(text_encoder(ids, params=text_params)[0], np.float32)


class Conditioning(trainables.ConditioningKind):
  group = "conditioning"

  def row(self, label: int, cluster: int) -> int:
    """Row of the conditioning table for (class label, cluster)."""
    return label * self.clusters_per_class + cluster

  def init(self, sd):
    """[num_classes * k, 77, hidden]."""
    encoded = encode_prompts(
      sd.text_encoder, sd.params["text_encoder"], sd.tokenizer, [prompts.simple_no_ws(c) for c in self.classes]
    )
    return jnp.asarray(np.repeat(encoded, self.clusters_per_class, axis=0))

  def hidden_states_fn(self, sd):
    del sd
    return lambda learned, text_params, batch: learned[batch["conditioning_index"]]

  def batch_fields(self, examples, *, epoch, seed):
    del epoch, seed
    return {"conditioning_index": np.asarray([self.row(e.label, e.cluster) for e in examples], np.int32)}

  def export(self, sd, learned):
    del learned  # sampled through Request.encoder_hidden_states, not through the model
    return sd

  def conditioning(self, learned, *, label, cluster, image_index, seed):
    del image_index, seed
    return learned[self.row(label, cluster)]
