"""k-means over image embeddings (FT cluster conditioning) and cluster-size-proportional sampling.

Pure numpy and seeded: the same features and seed always give the same clusters, so a resumed run or a
second host computes the identical split of a class into clusters.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class KMeansResult:
  centroids: np.ndarray  # [k, D] float64
  assignments: np.ndarray  # [N] int, cluster of each feature row
  inertia: float  # sum of squared distances to the assigned centroid


def _squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
  # |x|^2 - 2 x.c + |c|^2, clipped at 0 against round-off.
  d = (x * x).sum(1)[:, None] - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
  return np.maximum(d, 0.0)


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  """Arthur & Vassilvitskii (2007): each next centre drawn with probability proportional to D(x)^2."""
  centroids = [x[rng.integers(len(x))]]
  closest = _squared_distances(x, np.asarray(centroids))[:, 0]
  for _ in range(1, k):
    total = closest.sum()
    # All points coincide with chosen centres (duplicates): any point is as good as another.
    index = rng.integers(len(x)) if total <= 0 else rng.choice(len(x), p=closest / total)
    centroids.append(x[index])
    closest = np.minimum(closest, _squared_distances(x, x[index][None])[:, 0])
  return np.asarray(centroids)


def _lloyd(x: np.ndarray, centroids: np.ndarray, max_iters: int, tol: float) -> KMeansResult:
  for _ in range(max_iters):
    assignments = _squared_distances(x, centroids).argmin(1)
    updated = centroids.copy()
    for j in range(len(centroids)):
      members = x[assignments == j]
      if len(members):  # An emptied cluster keeps its centre rather than becoming NaN.
        updated[j] = members.mean(0)
    shift = np.abs(updated - centroids).max()
    centroids = updated
    if shift <= tol:
      break
  distances = _squared_distances(x, centroids)
  assignments = distances.argmin(1)
  return KMeansResult(centroids, assignments, float(distances[np.arange(len(x)), assignments].sum()))


def kmeans(
  features: np.ndarray, k: int, *, seed: int, n_init: int = 4, max_iters: int = 300, tol: float = 1e-6
) -> KMeansResult:
  """Clusters the rows of `features` [N, D] into k groups (k-means++ init, Lloyd iterations, best of
  `n_init` restarts by inertia). Cluster ids are renumbered by first appearance in row order, so the
  result does not depend on which restart won."""
  x = np.asarray(features, dtype=np.float64)
  if x.ndim != 2:
    raise ValueError(f"k-means features must be a 2-D array [N, D], got shape {x.shape}")
  if not np.isfinite(x).all():
    raise ValueError("k-means features contain NaN or infinite values")
  if not 1 <= k <= len(x):
    raise ValueError(f"k-means needs 1 <= k <= number of features; got k={k} for {len(x)} features")
  rng = np.random.default_rng(seed)
  best = None
  for _ in range(n_init):
    result = _lloyd(x, _kmeans_plus_plus(x, k, rng), max_iters, tol)
    if best is None or result.inertia < best.inertia:
      best = result
  _, first = np.unique(best.assignments, return_index=True)
  order = np.asarray(best.assignments)[np.sort(first)]  # old ids in order of first appearance
  order = np.concatenate([order, np.setdiff1d(np.arange(k), order)])  # empty clusters last
  relabel = np.empty(k, dtype=np.int64)
  relabel[order] = np.arange(k)
  return KMeansResult(best.centroids[order], relabel[best.assignments], best.inertia)


def cluster_sizes(assignments: np.ndarray, k: int) -> np.ndarray:
  return np.bincount(np.asarray(assignments), minlength=k)


def allocate_by_size(sizes: np.ndarray, total: int) -> np.ndarray:
  """Splits `total` generated images over clusters in proportion to their sizes (largest remainder,
  ties to the lower cluster id), so the counts are exact and sum to `total`."""
  sizes = np.asarray(sizes, dtype=np.int64)
  if sizes.ndim != 1 or (sizes < 0).any() or sizes.sum() == 0:
    raise ValueError(f"cluster sizes must be non-negative counts with a positive sum, got {sizes.tolist()}")
  if total < 0:
    raise ValueError(f"number of images to allocate must be >= 0, got {total}")
  exact = sizes * total / sizes.sum()
  counts = np.floor(exact).astype(np.int64)
  remainder = exact - counts
  for j in np.argsort(-remainder, kind="stable")[: total - counts.sum()]:
    counts[j] += 1
  return counts


def cluster_of_images(sizes: np.ndarray, total: int, *, seed: int, label: int) -> np.ndarray:
  """The cluster whose conditioning generates image index i of a class, for i in [0, total).

  Counts follow `allocate_by_size`; their order is a permutation seeded by (seed, label) so that any
  prefix of the image indices is itself drawn in proportion to cluster size."""
  counts = allocate_by_size(sizes, total)
  schedule = np.repeat(np.arange(len(counts)), counts)
  return np.random.default_rng([seed, label]).permutation(schedule)
