"""A fine-tuned checkpoint as the sampling engine sees it: SD with the fine-tuned weights swapped in,
and per image the conditioning to generate it with.

  personalized = load_personalized(finetune_workdir, "best_val")
  personalized.sd                       # StableDiffusion: fine-tuned U-Net / tokenizer / text encoder
  personalized.conditioning(wnid, image_index, num_images=390, seed=0)
      -> np.ndarray [77, hidden]   learned conditioning (methods 5-7; for 6 the cluster is drawn in
                                   proportion to cluster size by kmeans.cluster_of_images)
      -> str                       textual-inversion template around the class's pseudo-word (8, 9)
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_aug.data import prompts
from jax_aug.data.imagenet_classes import class_by_wnid
from jax_aug.finetune import kmeans, pseudo_word
from jax_aug.finetune.clusters import CLUSTERS_FILE, cluster_sizes
from jax_aug.io import read_json


@dataclasses.dataclass(frozen=True)
class Personalized:
  sd: Any                               # jax_aug.diffusion.loading.StableDiffusion
  info: dict                            # the run's finetune.json
  conditioning_table: np.ndarray | None  # [num_classes * k, 77, hidden] for tensor methods
  sizes: dict[str, list[int]] | None    # cluster sizes per wnid (FT cluster conditioning)

  @functools.cached_property
  def _label(self) -> dict[str, int]:
    return {w: i for i, w in enumerate(self.info["wnids"])}

  def cluster(self, wnid: str, image_index: int, *, num_images: int, seed: int) -> int:
    """The cluster whose conditioning generates image `image_index` of `num_images` of class wnid."""
    k = self.info["clusters_per_class"]
    if k == 1:
      return 0
    schedule = kmeans.cluster_of_images(np.asarray(self.sizes[wnid]), num_images, seed=seed,
                                        label=self._label[wnid])
    return int(schedule[image_index])

  def conditioning(self, wnid: str, image_index: int, *, num_images: int, seed: int) -> np.ndarray | str:
    if wnid not in self._label:
      raise KeyError(f"class {wnid} was not fine-tuned in this run (classes: {self.info['wnids'][:5]}...)")
    if not 0 <= image_index < num_images:
      raise ValueError(f"image index {image_index} is outside [0, {num_images})")
    if self.info["conditioning"] == "pseudo_word":
      return prompts.build_prompt("textual_inversion", class_by_wnid(wnid), image_index, seed,
                                  placeholder=self.info["placeholders"][self._label[wnid]])
    k = self.info["clusters_per_class"]
    row = self._label[wnid] * k + self.cluster(wnid, image_index, num_images=num_images, seed=seed)
    return self.conditioning_table[row]


def apply_trainable(sd: Any, info: dict, trainable: dict, *, sizes: dict | None = None,
                    checkpoint: str | None = None) -> Personalized:
  """SD with the trained parts of `trainable` in place of the originals (cast to SD's dtype)."""
  cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.dtype(sd.dtype)), tree)
  overrides: dict[str, Any] = {"checkpoint": checkpoint}
  if "unet" in trainable:
    overrides["unet_params"] = cast(trainable["unet"])
  table = None
  if info["conditioning"] == "pseudo_word":
    tokenizer, _ = pseudo_word.extend_tokenizer(sd.tokenizer, info["wnids"])
    frozen_table = pseudo_word.get_token_table(sd.params["text_encoder"])
    overrides["tokenizer"] = tokenizer
    overrides["text_encoder_params"] = pseudo_word.with_token_table(
        sd.params["text_encoder"], pseudo_word.extended_table(frozen_table, jnp.asarray(trainable["pseudo_words"])))
  else:
    table = np.asarray(trainable["conditioning"], np.float32)
  personalized_sd = sd.with_overrides(**overrides)
  if info["conditioning"] == "pseudo_word":
    personalized_sd = dataclasses.replace(
        personalized_sd, text_encoder=pseudo_word.extended_text_encoder(sd.text_encoder, len(info["wnids"])))
  return Personalized(personalized_sd, info, table, sizes)


def load_personalized(finetune_workdir: str | Path, checkpoint: str | Path, *, sd: Any | None = None) -> Personalized:
  """Loads a kept checkpoint of a fine-tuning run: `checkpoint` is a role ("best_val", "epoch_2", ...)
  or a checkpoint directory. `sd` defaults to the run's base model (finetune.json)."""
  from jax_aug.diffusion.loading import load_sd
  from jax_aug.finetune.trainer import INFO_FILE, kept_checkpoints, restore_tree
  workdir = Path(finetune_workdir)
  info = read_json(workdir / INFO_FILE)
  path = Path(checkpoint)
  if not path.is_dir():
    kept = kept_checkpoints(workdir)
    if str(checkpoint) not in kept:
      raise KeyError(f"{workdir} kept no checkpoint {str(checkpoint)!r}; kept roles: {sorted(kept)}")
    path = kept[str(checkpoint)]
  if sd is None:
    model = info["model"]
    sd = load_sd(model["path"], dtype=model["dtype"], revision=model["revision"], from_pt=model["from_pt"])
  trainable = restore_tree(path)["trainable"]
  sizes = cluster_sizes(workdir / CLUSTERS_FILE) if info["clusters_per_class"] > 1 else None
  return apply_trainable(sd, info, trainable, sizes=sizes, checkpoint=str(path))
