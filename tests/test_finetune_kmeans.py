"""k-means recovers well-separated clusters; generation draws clusters in proportion to their size."""

import numpy as np
import pytest

from jax_aug.finetune import kmeans as km


def _blobs(sizes, dim=16, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(len(sizes), dim)) * 50.0
  x = np.concatenate([c + rng.normal(size=(n, dim)) for c, n in zip(centres, sizes)])
  truth = np.repeat(np.arange(len(sizes)), sizes)
  perm = rng.permutation(len(x))
  return x[perm], truth[perm]


def test_recovers_well_separated_clusters():
  x, truth = _blobs([40, 25, 17, 9, 30])
  result = km.kmeans(x, 5, seed=3)
  # Same partition up to renaming: every true cluster maps to exactly one found cluster and back.
  pairs = set(zip(truth.tolist(), result.assignments.tolist()))
  assert len(pairs) == 5
  assert sorted(km.cluster_sizes(result.assignments, 5).tolist()) == [9, 17, 25, 30, 40]
  for j in range(5):
    np.testing.assert_allclose(result.centroids[j], x[result.assignments == j].mean(0))
  # Cluster ids are numbered by first appearance in row order.
  _, first = np.unique(result.assignments, return_index=True)
  assert result.assignments[np.sort(first)].tolist() == [0, 1, 2, 3, 4]


def test_same_seed_same_clusters_and_inertia_matches_definition():
  x, _ = _blobs([20, 20, 20], seed=1)
  a, b = km.kmeans(x, 3, seed=7), km.kmeans(x, 3, seed=7)
  np.testing.assert_array_equal(a.assignments, b.assignments)
  expected = sum(((x[a.assignments == j] - a.centroids[j]) ** 2).sum() for j in range(3))
  assert a.inertia == pytest.approx(expected)


def test_kmeans_rejects_bad_input():
  with pytest.raises(ValueError, match="k=6 for 5 features"):
    km.kmeans(np.zeros((5, 2)), 6, seed=0)
  with pytest.raises(ValueError, match="2-D"):
    km.kmeans(np.zeros(5), 2, seed=0)
  with pytest.raises(ValueError, match="NaN"):
    km.kmeans(np.array([[0.0], [np.nan]]), 1, seed=0)


def test_allocation_is_proportional_to_cluster_size():
  # 390 images over sizes 40/30/20/10: exact shares 156, 117, 78, 39.
  assert km.allocate_by_size(np.array([40, 30, 20, 10]), 390).tolist() == [156, 117, 78, 39]
  # 10 over 3 equal clusters: 3.33 each -> the first by remainder tie-break gets the extra one.
  assert km.allocate_by_size(np.array([5, 5, 5]), 10).tolist() == [4, 3, 3]
  # 7 over sizes 1/2/4: shares 1, 2, 4 exactly.
  assert km.allocate_by_size(np.array([1, 2, 4]), 7).tolist() == [1, 2, 4]
  with pytest.raises(ValueError, match="positive sum"):
    km.allocate_by_size(np.array([0, 0]), 3)


def test_cluster_of_images_is_seeded_and_proportional():
  sizes = np.array([40, 30, 20, 10])
  schedule = km.cluster_of_images(sizes, 390, seed=0, label=4)
  assert np.bincount(schedule, minlength=4).tolist() == [156, 117, 78, 39]
  np.testing.assert_array_equal(schedule, km.cluster_of_images(sizes, 390, seed=0, label=4))
  assert not np.array_equal(schedule, km.cluster_of_images(sizes, 390, seed=0, label=5))
  # Drawn in random order: the first 100 images already mix clusters roughly by size.
  head = np.bincount(schedule[:100], minlength=4) / 100
  np.testing.assert_allclose(head, sizes / sizes.sum(), atol=0.12)


def test_class_clusters_on_clip_features(tmp_path):
  """`features = "clip"`: a class of 3 reddish and 3 bluish images splits into those two groups (k=2) by a CLIP's
  image embeddings; a validation image takes the cluster of its colour; clusters.json records the features."""
  import ml_collections
  from mini_world_support import random_clip
  from PIL import Image

  from jax_aug.diffusion.loading import load_clip_tokenizer
  from jax_aug.finetune import clusters
  from jax_aug.io import read_json
  from jax_aug.mini_world.train_clip import export_clip

  clip, params = random_clip(0)
  folder = export_clip(clip, params, load_clip_tokenizer(), tmp_path / "clip")
  rng = np.random.default_rng(0)
  colours = {"red": (200, 30, 30), "blue": (30, 30, 200)}
  images = {}
  for name in ["red0", "blue0", "red1", "red2", "blue1", "blue2", "red_val"]:
    noise = rng.integers(-20, 21, (32, 32, 3))
    images[name] = Image.fromarray(
      np.clip(np.array(colours[name.rstrip("0123456789_val")]) + noise, 0, 255).astype(np.uint8)
    )
  wnid = "n01443537"
  train = [{"wnid": wnid, "path": name} for name in images if name != "red_val"]
  val = [{"wnid": wnid, "path": "red_val"}]
  config = ml_collections.ConfigDict({"features": "clip", "clip_model": str(folder), "batch_size": 4, "seed": 0})
  path = tmp_path / clusters.CLUSTERS_FILE
  assignments = clusters.class_clusters(config, train, val, [wnid], 2, path, images.__getitem__)
  red = {assignments[n] for n in ("red0", "red1", "red2", "red_val")}
  blue = {assignments[n] for n in ("blue0", "blue1", "blue2")}
  assert len(red) == len(blue) == 1 and red != blue
  saved = read_json(path)
  assert saved["features"] == "clip" and sorted(saved["sizes"][wnid]) == [3, 3]
