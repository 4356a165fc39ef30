"""Learned pseudo-words (textual inversion, pseudo-word + DM: methods 8, 9).

One new token `<wnid>` per class (jax_aug.finetune.pseudo_word: tokenizer, token table, initialization); the
learned array is only the new rows [num_classes, hidden], appended to the frozen CLIP table inside the step,
and the U-Net is conditioned on the frozen text encoder's output for a textual-inversion template around the
pseudo-word, drawn per example by (seed, epoch, class, index).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jax_aug.data import prompts
from jax_aug.finetune import pseudo_word, trainables
from jax_aug.finetune.data import template_seed


class Conditioning(trainables.ConditioningKind):
  group = "pseudo_words"

  def __init__(self, classes, clusters_per_class, tokenizer):
    super().__init__(classes, clusters_per_class, tokenizer)
    self.wnids = [c.wnid for c in self.classes]
    self.placeholders = [pseudo_word.placeholder(w) for w in self.wnids]
    self.base_tokenizer = tokenizer
    self.tokenizer, _ = pseudo_word.extend_tokenizer(tokenizer, self.wnids)

  @classmethod
  def check_clusters(cls, clusters_per_class):
    if clusters_per_class != 1:
      raise ValueError("pseudo-word methods learn one token per class; clusters_per_class must be 1")

  def init(self, sd):
    """[num_classes, hidden]."""
    table = pseudo_word.get_token_table(sd.params["text_encoder"])
    return jnp.asarray(pseudo_word.initial_embeddings(self.base_tokenizer, table, self.classes))

  def hidden_states_fn(self, sd):
    text_module = pseudo_word.extended_text_encoder(sd.text_encoder, len(self.classes)).module

    def hidden_states(learned, text_params, batch):
      table = pseudo_word.extended_table(pseudo_word.get_token_table(text_params), learned)
      params = pseudo_word.with_token_table(text_params, table)
      ids = batch["input_ids"]
      positions = jnp.broadcast_to(jnp.arange(ids.shape[-1]), ids.shape)
      return text_module.apply({"params": params}, ids, jnp.ones_like(ids), positions)[0]

    return hidden_states

  def _prompt(self, label: int, image_index: int, seed: int) -> str:
    return prompts.build_prompt(
      "textual_inversion", self.classes[label], image_index, seed, placeholder=self.placeholders[label]
    )

  def batch_fields(self, examples, *, epoch, seed):
    texts = [self._prompt(e.label, e.index, template_seed(seed, epoch)) for e in examples]
    return {"input_ids": trainables.tokenize(self.tokenizer, texts)}

  def info(self):
    return {"placeholders": self.placeholders}

  def export(self, sd, learned):
    frozen_table = pseudo_word.get_token_table(sd.params["text_encoder"])
    text_params = pseudo_word.with_token_table(
      sd.params["text_encoder"], pseudo_word.extended_table(frozen_table, jnp.asarray(learned))
    )
    return dataclasses.replace(
      sd.with_overrides(tokenizer=self.tokenizer, text_encoder_params=text_params),
      text_encoder=pseudo_word.extended_text_encoder(sd.text_encoder, len(self.classes)),
    )

  def conditioning(self, learned, *, label, cluster, image_index, seed):
    del learned, cluster
    return self._prompt(label, image_index, seed)
