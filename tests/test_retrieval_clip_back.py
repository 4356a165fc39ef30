"""Integration: a real `clip back` (clip-retrieval 2.45.0, its own venv, started on 127.0.0.1 without CLIP
weights) and our in-process faiss backend return the same neighbours on the same index."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import free_port
from retrieval_support import clip_back_server

from jax_aug.retrieval.builder import write_index
from jax_aug.retrieval.index import ClipBackClient, LocalIndex

COLUMNS = "url,caption,aesthetic,NSFW"


def _collection(n: int = 400, dim: int = 32, seed: int = 0):
  """Unit vectors with planted near-duplicate groups (cosine > 0.94) so the duplicate detector has work."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, dim)).astype(np.float32)
  for start in range(0, 120, 6):  # 20 groups: a base vector and 5 slight perturbations of it
    x[start + 1 : start + 6] = x[start] + 0.05 * rng.standard_normal((5, dim)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  metadata = {
    "url": [f"http://images.example/{i}.jpg" for i in range(n)],
    "caption": [f"caption {i}" for i in range(n)],
    "aesthetic": rng.uniform(3, 8, n).tolist(),
    "NSFW": rng.choice(["UNLIKELY", "UNSURE", "NSFW"], n).tolist(),
  }
  return x, metadata


@pytest.mark.slow
def test_clip_back_equals_local_faiss(tmp_path):
  x, metadata = _collection()
  write_index(tmp_path / "flat", x, metadata, index_factory="Flat", rows_per_file=150)  # 3 parquet files
  write_index(tmp_path / "ivfpq", x, metadata, index_factory="IVF8,PQ8x4")
  rng = np.random.default_rng(1)
  # Queries near planted duplicate groups and random ones.
  queries = np.concatenate([x[[0, 6, 12]] + 0.1 * rng.standard_normal((3, 32)), rng.standard_normal((3, 32))])
  queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
  indices = {name: str(tmp_path / name) for name in ("flat", "ivfpq")}
  with clip_back_server(indices, tmp_path, free_port(), COLUMNS) as url:
    for name in indices:
      local = LocalIndex(tmp_path / name, columns=COLUMNS.split(","))
      remote = ClipBackClient(url, name, timeout_s=30, retries=2, backoff_s=0.5)
      for query in queries:
        for k, deduplicate in ((5, False), (60, False), (60, True)):
          ours = local.search(query, k, deduplicate=deduplicate)
          theirs = remote.search(query, k, deduplicate=deduplicate)
          assert [n.id for n in ours] == [n.id for n in theirs], (name, k, deduplicate)
          np.testing.assert_allclose([n.similarity for n in ours], [n.similarity for n in theirs], atol=1e-6)
          for a, b in zip(ours, theirs):
            assert a.metadata["url"] == b.metadata["url"] == metadata["url"][a.id]
            assert a.metadata["caption"] == b.metadata["caption"]
            assert a.metadata["NSFW"] == b.metadata["NSFW"]
            assert a.metadata["aesthetic"] == pytest.approx(b.metadata["aesthetic"])
      # The planted groups really were collapsed (the comparison above is not vacuous).
      assert len(local.search(queries[0], 60, deduplicate=True)) < len(local.search(queries[0], 60, deduplicate=False))
