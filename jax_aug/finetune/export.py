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

from jax_aug.data.classes import DatasetClasses
from jax_aug.finetune import kmeans, trainables
from jax_aug.finetune.clusters import CLUSTERS_FILE, cluster_sizes
from jax_aug.io import read_json


@dataclasses.dataclass(frozen=True)
class Personalized:
  sd: Any  # jax_aug.diffusion.loading.StableDiffusion
  info: dict  # the run's finetune.json
  kind: trainables.ConditioningKind  # the method's conditioning kind, over the run's classes
  learned: np.ndarray  # its learned array (float32): conditioning table, pseudo-word rows
  sizes: dict[str, list[int]] | None  # cluster sizes per wnid (FT cluster conditioning)

  @functools.cached_property
  def _label(self) -> dict[str, int]:
    return {w: i for i, w in enumerate(self.info["wnids"])}

  def cluster(self, wnid: str, image_index: int, *, num_images: int, seed: int) -> int:
    """The cluster whose conditioning generates image `image_index` of `num_images` of class wnid."""
    k = self.info["clusters_per_class"]
    if k == 1:
      return 0
    schedule = kmeans.cluster_of_images(np.asarray(self.sizes[wnid]), num_images, seed=seed, label=self._label[wnid])
    return int(schedule[image_index])

  def conditioning(self, wnid: str, image_index: int, *, num_images: int, seed: int) -> np.ndarray | str:
    if wnid not in self._label:
      raise KeyError(f"class {wnid} was not fine-tuned in this run (classes: {self.info['wnids'][:5]}...)")
    if not 0 <= image_index < num_images:
      raise ValueError(f"image index {image_index} is outside [0, {num_images})")
    return self.kind.conditioning(
      self.learned,
      label=self._label[wnid],
      cluster=self.cluster(wnid, image_index, num_images=num_images, seed=seed),
      image_index=image_index,
      seed=seed,
    )


def run_classes(info: dict) -> DatasetClasses:
  """The dataset classes a fine-tuning run trained on (its finetune.json; runs without them: ImageNet)."""
  return DatasetClasses.from_json(info.get("dataset_classes", {"dataset": "imagenet"}))


def apply_trainable(
  sd: Any, info: dict, trainable: dict, *, sizes: dict | None = None, checkpoint: str | None = None
) -> Personalized:
  """SD with the trained parts of `trainable` in place of the originals (cast to SD's dtype)."""
  kind = trainables.build(
    info["conditioning"],
    [run_classes(info)[w] for w in info["wnids"]],
    clusters_per_class=info["clusters_per_class"],
    tokenizer=sd.tokenizer,
  )
  learned = np.asarray(trainable[kind.group], np.float32)
  unet_params = None
  if "unet" in trainable:
    unet_params = jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.dtype(sd.dtype)), trainable["unet"])
  personalized_sd = kind.export(sd, learned).with_overrides(unet_params=unet_params, checkpoint=checkpoint)
  return Personalized(personalized_sd, info, kind, learned, sizes)


def load_personalized(finetune_workdir: str | Path, checkpoint: str | Path, *, sd: Any | None = None) -> Personalized:
  """Loads a kept checkpoint of a fine-tuning run: `checkpoint` is a role ("best_val", "epoch_2", ...)
  or a checkpoint directory. `sd` defaults to the run's base model (finetune.json)."""
  from jax_aug.diffusion.loading import load_sd
  from jax_aug.finetune.checkpoints import kept_checkpoints, restore_trainable
  from jax_aug.finetune.trainer import INFO_FILE

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
  trainable = restore_trainable(path)
  sizes = cluster_sizes(workdir / CLUSTERS_FILE) if info["clusters_per_class"] > 1 else None
  return apply_trainable(sd, info, trainable, sizes=sizes, checkpoint=str(path))
