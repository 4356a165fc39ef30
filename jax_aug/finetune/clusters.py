"""FT cluster conditioning (method 6): each class's subset images split by k-means on image features; one
learned conditioning per (class, cluster).

The paper's features are Inception-v3 pool features (`features = "inception_v3"`, torchvision's weights).
`features = "clip"` takes a CLIP image tower's embeddings instead (`clip_model`): the mini world has no
ImageNet-trained Inception, and its tiny CLIP, trained on the world's corpus, is its pretrained feature extractor.

Validation images get the cluster of the nearest centroid of their class, so the validation loss uses
the conditioning that would generate images like them. The result is written once to clusters.json
(image path -> cluster, per-class cluster sizes) and reused on resume; the sampler reads the sizes to
draw clusters in proportion to them (kmeans.cluster_of_images).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from PIL import Image
from tqdm import tqdm

from jax_aug.finetune import inception, kmeans
from jax_aug.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

CLUSTERS_FILE = "clusters.json"
FEATURES = ("inception_v3", "clip")
# Pool features of one batch (variables, images [B, H, W, 3]) -> [B, 2048]; one jitted function for every
# call, which the plan (jax_aug/plan) also compiles.
inception_features = jax.jit(inception.InceptionV3Features().apply)


def inception_variables(config: Any) -> dict:
  """Real torchvision weights from `config.inception_weights`, or (empty; tiny runs only) a random
  init seeded by `config.seed`: the clustering then tests the machinery, not the semantics."""
  if config.inception_weights:
    state = inception.load_torchvision_state_dict(config.inception_weights)
    return inception.variables_from_torchvision(state)
  log.warning("no Inception-v3 weights configured: clustering on random-init features")
  size = config.image_size
  return inception.InceptionV3Features().init(jax.random.key(config.seed), np.zeros((1, size, size, 3)))


def _chunks(paths: Sequence[str], batch_size: int, desc: str) -> Iterator[Sequence[str]]:
  """`paths` in chunks of `batch_size`, with a progress bar on the chief process."""
  for start in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", disable=jax.process_index() != 0):
    yield paths[start : start + batch_size]


def image_features(
  variables: dict, paths: Sequence[str], read_image: Callable[[str], Image.Image], *, image_size: int, batch_size: int
) -> np.ndarray:
  """[len(paths), 2048] pool features."""
  features = [np.zeros((0, inception.FEATURE_DIM), np.float32)]
  for chunk in _chunks(paths, batch_size, "Inception-v3 features"):
    x = np.stack([inception.preprocess(read_image(p), image_size) for p in chunk])
    pad = batch_size - len(chunk)  # one compiled shape for every batch
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    features.append(np.asarray(inception_features(variables, x))[: len(chunk)])
  return np.concatenate(features)


def check_features(config: Any) -> None:
  if config.features not in FEATURES:
    raise ValueError(f"finetune.clusters.features={config.features!r}: expected one of {FEATURES}")
  if config.features == "clip" and not config.clip_model:
    raise ValueError("finetune.clusters.features='clip' needs finetune.clusters.clip_model (a CLIP folder or hub id)")


def features_stage(config: Any) -> str:
  """The plan's stage name of the clusters block's feature extractor."""
  check_features(config)
  return "finetune/inception_v3" if config.features == "inception_v3" else "finetune/clip_image_features"


def cluster_features(config: Any, paths: Sequence[str], read_image: Callable[[str], Image.Image]) -> np.ndarray:
  """[len(paths), D] features of the clusters block's extractor (`config.features`)."""
  check_features(config)
  if config.features == "inception_v3":
    return image_features(
      inception_variables(config), paths, read_image, image_size=config.image_size, batch_size=config.batch_size
    )
  from jax_aug.retrieval.clip_model import embed_images, load_clip

  clip = load_clip(config.clip_model)
  features = [np.zeros((0, clip.embedding_dim), np.float32)]
  for chunk in _chunks(paths, config.batch_size, "CLIP image features"):
    features.append(embed_images(clip, [read_image(p) for p in chunk], batch_size=config.batch_size))
  return np.concatenate(features)


def class_clusters(
  config: Any,
  train_records: Sequence[dict],
  val_records: Sequence[dict],
  wnids: Sequence[str],
  k: int,
  path: Path,
  read_image: Callable[[str], Image.Image],
) -> dict[str, int]:
  """Image path -> cluster id in [0, k) for every train and validation record (cached in `path`)."""
  if path.exists():
    saved = read_json(path)
    if saved["k"] != k or saved["wnids"] != list(wnids) or saved["features"] != config.features:
      raise ValueError(
        f"{path} holds clusters for k={saved['k']} on {saved['features']} features over {len(saved['wnids'])}"
        f" classes; expected k={k} on {config.features} features over these {len(wnids)} classes"
        " (delete it to recluster)"
      )
    missing = [r["path"] for r in list(train_records) + list(val_records) if r["path"] not in saved["assignments"]]
    if missing:
      raise ValueError(
        f"{path} is stale: it assigns no cluster to {len(missing)} of the current subset/validation"
        f" images (e.g. {missing[0]}); the splits changed since it was written: delete it to recluster"
      )
    return saved["assignments"]
  records = list(train_records) + list(val_records)
  features = cluster_features(config, [r["path"] for r in records], read_image)
  train_features, val_features = features[: len(train_records)], features[len(train_records) :]
  assignments, sizes = {}, {}
  for label, wnid in enumerate(wnids):
    rows = [i for i, r in enumerate(train_records) if r["wnid"] == wnid]
    if len(rows) < k:
      raise ValueError(f"class {wnid} has {len(rows)} subset images, fewer than k={k} clusters")
    result = kmeans.kmeans(train_features[rows], k, seed=config.seed + label)
    sizes[wnid] = kmeans.cluster_sizes(result.assignments, k).tolist()
    for row, cluster in zip(rows, result.assignments.tolist()):
      assignments[train_records[row]["path"]] = cluster
    for i, r in enumerate(val_records):
      if r["wnid"] == wnid:
        d = ((result.centroids - val_features[i]) ** 2).sum(1)
        assignments[r["path"]] = int(d.argmin())
  record = {"k": k, "features": config.features, "wnids": list(wnids), "sizes": sizes, "assignments": assignments}
  atomic_write_json(path, record)
  return assignments


def cluster_sizes(path: Path) -> dict[str, list[int]]:
  return read_json(path)["sizes"]
