"""Request builders of the sampling kinds (prompt methods 1-4, Boomerang): which images, which conditioning."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jax_aug import method_kinds
from jax_aug.data import prompts
from jax_aug.data.classes import DatasetClasses, imagenet
from jax_aug.diffusion.engine import Request

# Boomerang uses the model unconditionally ("guidance-free", paper Sec. 3.1): the empty prompt, whose
# encoding is also the unconditional branch, so guidance has no effect.
BOOMERANG_PROMPT = ""
# The kinds whose requests this module builds (fine-tuned methods pass their own requests).
SAMPLING_KINDS = (method_kinds.PROMPT, method_kinds.BOOMERANG)


def prompt_requests(
  strategy: str,
  wnids: Sequence[str],
  images_per_class: int,
  seed: int,
  lemmas: str = "all",
  classes: DatasetClasses | None = None,
) -> list[Request]:
  """images_per_class prompted requests per class, prompt i from build_prompt(strategy, cls, i, seed);
  `classes`: the dataset the class ids `wnids` belong to (default ImageNet)."""
  _check_count(images_per_class)
  classes = classes or imagenet()
  prompts.check_strategy(strategy, classes)
  requests = []
  for wnid in wnids:
    cls = classes[wnid]
    for index in range(images_per_class):
      requests.append(
        Request(
          wnid,
          index,
          prompt=prompts.build_prompt(strategy, cls, index, seed, lemmas=lemmas),
          provenance={"prompt_strategy": strategy},
          class_index=cls.index,
        )
      )
  return requests


def boomerang_requests(
  subset_records: Sequence[Mapping], wnids: Sequence[str], images_per_class: int, classes: DatasetClasses | None = None
) -> list[Request]:
  """Image i of a class re-noises subset image i mod n_c (subset images ordered by path), so every subset
  image is used equally often (390 from 74..130 per class: each 3 to 6 times, each time other noise)."""
  _check_count(images_per_class)
  classes = classes or imagenet()
  by_class: dict[str, list[str]] = {w: [] for w in wnids}
  for record in subset_records:
    if record["wnid"] in by_class:
      by_class[record["wnid"]].append(record["path"])
  requests = []
  for wnid in wnids:
    paths = sorted(by_class[wnid])
    if not paths:
      raise ValueError(f"Boomerang: class {wnid} has no subset image to start from")
    for index in range(images_per_class):
      requests.append(
        Request(wnid, index, prompt=BOOMERANG_PROMPT, init_image=paths[index % len(paths)], class_index=classes[wnid].index)
      )
  return requests


def build_requests(
  kind: str,
  *,
  wnids: Sequence[str],
  images_per_class: int,
  seed: int,
  prompt_strategy: str = "",
  subset_records: Sequence[Mapping] = (),
  lemmas: str = "all",
  classes: DatasetClasses | None = None,
) -> list[Request]:
  """The requests of a method of `kind` (config.method.kind): a prompt method's from its `prompt_strategy`
  (a name registered in jax_aug.data.prompts), Boomerang's from the subset images; `classes`: the dataset
  of the class ids `wnids` (default ImageNet)."""
  if kind not in SAMPLING_KINDS:
    raise ValueError(
      f"unknown sampling kind {kind!r}: expected one of {SAMPLING_KINDS} (fine-tuned methods pass their own requests)"
    )
  if not wnids:
    raise ValueError(f"{kind}: zero images requested: no classes given")
  if kind == method_kinds.BOOMERANG:
    return boomerang_requests(subset_records, wnids, images_per_class, classes)
  if prompt_strategy not in prompts.PROMPT_STRATEGIES:
    raise ValueError(f"unknown prompt strategy {prompt_strategy!r}: expected one of {sorted(prompts.PROMPT_STRATEGIES)}")
  return prompt_requests(prompt_strategy, wnids, images_per_class, seed, lemmas, classes)


def _check_count(images_per_class: int) -> None:
  if not isinstance(images_per_class, int) or images_per_class < 1:
    raise ValueError(f"zero images requested: images_per_class is {images_per_class!r}, expected >= 1")
