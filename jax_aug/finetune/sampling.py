"""A fine-tuned method's augmentation set: the sampling engine run with the fine-tuned model and one
request per image whose conditioning the checkpoint decides (export.Personalized.conditioning).

`sample_finetuned(config, workdir)` is what sample.py runs for the finetuned kind (jax_aug/method_kinds.py):
`config.finetune.workdir` is the fine-tuning run and `config.finetune.checkpoint` the kept checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from jax_aug.finetune.export import Personalized, load_personalized, run_classes


def finetuned_requests(personalized: Personalized, wnids: Sequence[str], *, images_per_class: int, seed: int) -> list:
  """images_per_class requests per class; provenance names the checkpoint and, for clusters, the cluster."""
  from jax_aug.diffusion.engine import Request

  if images_per_class < 1:
    raise ValueError(f"zero images requested: images_per_class is {images_per_class}, expected >= 1")
  classes = run_classes(personalized.info)
  requests = []
  for wnid in wnids:
    class_index = classes[wnid].index
    for index in range(images_per_class):
      conditioning = personalized.conditioning(wnid, index, num_images=images_per_class, seed=seed)
      provenance = {"finetuned_checkpoint": personalized.sd.checkpoint}
      if isinstance(conditioning, str):
        requests.append(Request(wnid, index, prompt=conditioning, provenance=provenance, class_index=class_index))
      else:
        provenance["cluster"] = personalized.cluster(wnid, index, num_images=images_per_class, seed=seed)
        requests.append(
          Request(wnid, index, encoder_hidden_states=conditioning, provenance=provenance, class_index=class_index)
        )
  return requests


def sample_finetuned(config, workdir: str | os.PathLike) -> Path:
  """Writes (or completes) the augmentation set of a fine-tuned method config into `workdir`."""
  from jax_aug.diffusion.run import sample_augmentation_set

  finetune_dir = config.finetune.workdir
  if not finetune_dir:
    raise ValueError(
      f"{config.method.name}: config.finetune.workdir is empty; expected the directory that finetune_dm.py trained in"
    )
  if not Path(finetune_dir, "finetune.json").is_file():
    raise FileNotFoundError(f"{finetune_dir} holds no fine-tuning run (no finetune.json)")
  personalized = load_personalized(finetune_dir, config.finetune.checkpoint)
  wnids = list(config.wnids) or personalized.info["wnids"]
  requests = finetuned_requests(personalized, wnids, images_per_class=config.images_per_class, seed=config.seed)
  return sample_augmentation_set(config, workdir, model=personalized.sd, requests=requests)
