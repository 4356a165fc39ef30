"""The mini world's quality bars on trained weights (issue 14), measured through the project's own code:
the CLIP towers of `jax_aug.retrieval.clip_model`, the study's prompt "A photo of w(n)."
(`jax_aug.data.prompts.simple_no_ws`), and the clip-retrieval index layout searched by `LocalIndex`.

- zero-shot top-1 on the target test split (bar: >= 0.70);
- retrieval precision: the top `k` corpus images of each class's no-ws prompt, fraction whose true concept
  (the generator's ground truth, a metadata column) is that class, averaged over classes (bar: >= 0.80).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jax_aug.data.imagenet_classes import class_by_wnid
from jax_aug.data.prompts import simple_no_ws
from jax_aug.mini_world import concepts

ZERO_SHOT_BAR = 0.70
RETRIEVAL_BAR = 0.80
RETRIEVED_PER_CLASS = 130  # the paper keeps 130 retrieved images per class


def class_prompts(wnids: Sequence[str] = concepts.WNIDS) -> list[str]:
  return [simple_no_ws(class_by_wnid(w)) for w in wnids]


def zero_shot_predictions(image_embeddings: np.ndarray, prompt_embeddings: np.ndarray) -> np.ndarray:
  """Per image, the index of its most similar prompt (row of `prompt_embeddings`); ties go to the first."""
  return np.argmax(image_embeddings @ prompt_embeddings.T, axis=1)


def zero_shot_top1(image_embeddings: np.ndarray, labels: np.ndarray, prompt_embeddings: np.ndarray) -> float:
  """Fraction of images whose most similar prompt is their label's."""
  return float(np.mean(zero_shot_predictions(image_embeddings, prompt_embeddings) == labels))


def zero_shot_per_class(
  image_embeddings: np.ndarray, labels: np.ndarray, prompt_embeddings: np.ndarray, wnids: Sequence[str]
) -> dict[str, dict]:
  """{wnid: {"top1": its images' zero-shot top-1, "taken_for": {other wnid: images predicted as it}}}: where
  the bar is lost (classes with one prompt, such as the two cranes, split their images between them)."""
  predictions = zero_shot_predictions(image_embeddings, prompt_embeddings)
  per_class = {}
  for label, wnid in enumerate(wnids):
    predicted = predictions[labels == label]
    counts = np.bincount(predicted, minlength=len(wnids))
    per_class[wnid] = {
      "top1": float(np.mean(predicted == label)),
      "taken_for": {wnids[j]: int(counts[j]) for j in np.argsort(-counts, kind="stable") if counts[j] and j != label},
    }
  return per_class


def retrieval_precision(
  index, prompt_embeddings: np.ndarray, wnids: Sequence[str], k: int = RETRIEVED_PER_CLASS
) -> dict[str, float]:
  """{wnid: fraction of the k nearest neighbours of its prompt whose `concept` metadata is wnid}, searched
  with `index` (a `jax_aug.retrieval.index` backend whose metadata has the `concept` column)."""
  precision = {}
  for wnid, query in zip(wnids, prompt_embeddings):
    neighbours = index.search(query / np.linalg.norm(query), k, deduplicate=False)
    precision[wnid] = float(np.mean([n.metadata["concept"] == wnid for n in neighbours]))
  return precision


def build_corpus_index(folder: str | Path, embeddings: np.ndarray, metadata_table) -> Path:
  """The corpus's image embeddings in clip-retrieval's layout (flat inner-product index, metadata rows in
  item order), via the project's index builder."""
  from jax_aug.retrieval.builder import write_index

  columns = metadata_table.to_pydict()
  return write_index(folder, embeddings, columns)
