"""Local kNN backend throughput on a synthetic CLIP-like index of >= 1M vectors: queries/s of faiss
(flat and IVF-PQ, memory-mapped, as `LocalIndex` opens them) vs an exact PyTorch reference (matmul +
topk over the same vectors, in the same process), and images/s of full `LocalIndex.search` calls (k
neighbours with their parquet metadata, as the retrieval pipeline consumes them).

  .venv/bin/python benchmarks/retrieval_throughput.py                       # 1M x 768, ~3-6 min, 2 cores
  .venv/bin/python benchmarks/retrieval_throughput.py --num_vectors=200000  # quicker look

The vectors are a Gaussian mixture (like image embeddings, clustered), L2-normalized, dimension 768 (CLIP
ViT-L/14); k = 182 (the paper's first step, 1.4 x 130). IVF-PQ recall@182 against the exact search is
printed too, since its speed is bought with approximation (raise --nprobe for recall).
"""

import tempfile
import time
from pathlib import Path

import machine_load
import numpy as np
import torch
from absl import flags

from jax_aug.retrieval.builder import make_faiss_index, write_faiss_index
from jax_aug.retrieval.index import INDEX_FILE, METADATA_DIR, LocalIndex

_N = flags.DEFINE_integer("num_vectors", 1_000_000, "vectors in the synthetic index")
_DIM = flags.DEFINE_integer("dim", 768, "embedding dimension (CLIP ViT-L/14: 768)")
_K = flags.DEFINE_integer("k", 182, "neighbours per query (paper: 1.4 x 130)")
_QUERIES = flags.DEFINE_integer("queries", 64, "queries per timed batch")
_IVF = flags.DEFINE_string("ivf", "IVF256,PQ32", "faiss factory string of the approximate index")
_NPROBE = flags.DEFINE_integer("nprobe", 16, "IVF lists probed per query")
_TRAIN = flags.DEFINE_integer("train_size", 20_000, "vectors the IVF-PQ index trains on")


def synthetic_embeddings(n: int, dim: int, seed: int = 0, clusters: int = 2000) -> np.ndarray:
  rng = np.random.default_rng(seed)
  centers = rng.standard_normal((clusters, dim)).astype(np.float32)
  x = np.empty((n, dim), np.float32)
  for start in range(0, n, 100_000):  # chunks keep the temporaries small
    stop = min(n, start + 100_000)
    chunk = centers[rng.integers(clusters, size=stop - start)] + 0.3 * rng.standard_normal((stop - start, dim), np.float32)
    x[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
  return x


def timed(fn, repeats: int = 3) -> float:
  fn()  # warm-up
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def write_metadata(folder: Path, n: int) -> None:
  import pyarrow as pa
  import pyarrow.parquet as pq

  (folder / METADATA_DIR).mkdir(parents=True)
  ids = np.arange(n)
  table = pa.table(
    {
      "url": pa.array([f"https://images.example/{i}.jpg" for i in ids]),
      "caption": pa.array([f"a synthetic caption number {i}" for i in ids]),
      "aesthetic": pa.array(np.random.default_rng(1).uniform(3, 8, n)),
    }
  )
  pq.write_table(table, folder / METADATA_DIR / "00000.parquet", row_group_size=100_000)


def main(argv):
  del argv
  torch.set_num_threads(torch.get_num_threads())
  n, dim, k, nq = _N.value, _DIM.value, _K.value, _QUERIES.value
  print(
    f"synthetic index: {n} x {dim} float32 ({n * dim * 4 / 2**30:.2f} GiB), k={k}, batch of {nq} queries,"
    f" {torch.get_num_threads()} threads"
  )
  x = synthetic_embeddings(n, dim)
  queries = synthetic_embeddings(nq, dim, seed=1)
  reference = torch.from_numpy(x)
  q_torch = torch.from_numpy(queries)

  def torch_search(q):
    return torch.topk(q @ reference.T, k, dim=1)

  t_torch_batch = timed(lambda: torch_search(q_torch))
  t_torch_single = timed(lambda: torch_search(q_torch[:1]))
  exact = torch_search(q_torch).indices.numpy()
  print(f"pytorch exact (matmul+topk): {nq / t_torch_batch:9.1f} queries/s batched, {1 / t_torch_single:7.1f} single")

  with tempfile.TemporaryDirectory() as tmp:
    for name, factory in (("flat", "Flat"), ("ivfpq", _IVF.value)):
      folder = Path(tmp) / name
      start = time.perf_counter()
      write_faiss_index(folder / INDEX_FILE, make_faiss_index(x, factory, train_size=_TRAIN.value))
      write_metadata(folder, n)
      build_s = time.perf_counter() - start
      index = LocalIndex(folder, nprobe=_NPROBE.value if factory != "Flat" else None)
      t_batch = timed(lambda index=index: index.search_batch(queries, k))
      t_single = timed(lambda index=index: index.search_batch(queries[:1], k))
      _, found = index.search_batch(queries, k)
      recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)])
      t_full = timed(lambda index=index: [index.search(q, k, deduplicate=True) for q in queries[:8]], repeats=1)
      print(
        f"faiss {name:6s} ({factory}, built in {build_s:.0f} s): {nq / t_batch:9.1f} queries/s batched"
        f" ({t_torch_batch / t_batch:5.2f}x pytorch), {1 / t_single:7.1f} single"
        f" ({t_torch_single / t_single:5.2f}x pytorch), recall@{k} {recall:.3f};"
        f" LocalIndex.search with dedup + metadata: {8 * k / t_full:8.0f} images/s"
        f" ({8 / t_full:.1f} queries/s)"
      )
      del index


if __name__ == "__main__":
  machine_load.run(main)
