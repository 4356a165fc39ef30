"""kNN search over CLIP image embeddings: one interface, two backends.

- `LocalIndex`: a folder in clip-retrieval's layout (`image.index` faiss file + `metadata/*.parquet`, row i
  of the sorted parquet files = vector id i), searched in-process with faiss-cpu. The index is
  memory-mapped and metadata is read one parquet row group at a time, so neither must fit in RAM.
- `ClipBackClient`: a running `clip back` server (clip-retrieval's REST `/knn-service`), queried with
  embeddings, with timeouts, retries with exponential backoff and a clear error when it is down.

Both return the same thing for the same index: clip back's `knn_search` semantics (search and
reconstruct the k nearest, drop missing ids, optionally drop near-duplicates with clip-retrieval's
detector at cosine 0.94), as the integration test against a real clip back checks.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jax_aug.retrieval.filters import DEFAULT_DEDUP_THRESHOLD, duplicate_reasons

log = logging.getLogger(__name__)

INDEX_FILE = "image.index"
METADATA_DIR = "metadata"


@dataclasses.dataclass(frozen=True)
class Neighbour:
  """One search result: its id in the index, cosine similarity to the query, and metadata columns."""

  id: int
  similarity: float
  metadata: dict[str, Any]


class KnnBackend(Protocol):
  def search(self, query: np.ndarray, k: int, *, deduplicate: bool) -> list[Neighbour]:
    """The k nearest neighbours of one L2-normalized query [D], best first, near-duplicates removed
    when `deduplicate` (so fewer than k may come back)."""


def _check_query(query: np.ndarray, dim: int | None) -> np.ndarray:
  query = np.asarray(query, np.float32)
  if query.ndim != 1 or (dim is not None and query.shape[0] != dim):
    raise ValueError(f"query must be one embedding [{dim or 'D'}], got shape {list(query.shape)}")
  if not np.isclose(np.linalg.norm(query), 1.0, atol=1e-3):
    raise ValueError(f"query must be L2-normalized, got norm {np.linalg.norm(query):.4f}")
  return query


def _check_k(k: int) -> int:
  if not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k (number of neighbours) must be an integer >= 1, got {k!r}")
  return int(k)


class ParquetMetadata:
  """Rows of `metadata/*.parquet` by global row id, reading one row group at a time (LRU-cached)."""

  def __init__(self, folder: Path, columns: Sequence[str] | None = None, cache_row_groups: int = 16):
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*.parquet"))
    if not files:
      raise FileNotFoundError(f"no metadata/*.parquet files in {folder} (clip-retrieval layout expected)")
    self._files = [pq.ParquetFile(f, memory_map=True) for f in files]
    names = self._files[0].schema_arrow.names
    self.columns = list(names) if columns is None else [c for c in columns if c in names]
    # (file, row group) of every row-group start, as one sorted array of global offsets.
    self._groups, starts, offset = [], [], 0
    for fi, f in enumerate(self._files):
      for gi in range(f.metadata.num_row_groups):
        self._groups.append((fi, gi))
        starts.append(offset)
        offset += f.metadata.row_group(gi).num_rows
    self._starts = np.asarray(starts, np.int64)
    self.num_rows = offset
    self._read_group = functools.lru_cache(maxsize=cache_row_groups)(self._read_group_uncached)

  def _read_group_uncached(self, group: int) -> dict[str, list]:
    fi, gi = self._groups[group]
    return self._files[fi].read_row_group(gi, columns=self.columns).to_pydict()

  def get(self, ids: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for i in ids:
      if not 0 <= i < self.num_rows:
        raise IndexError(f"metadata has {self.num_rows} rows; id {i} is out of range")
      group = int(np.searchsorted(self._starts, i, side="right") - 1)
      table = self._read_group(group)
      local = int(i - self._starts[group])
      rows.append({c: table[c][local] for c in self.columns})
    return rows


class LocalIndex:
  """In-process faiss search over a clip-retrieval index folder."""

  def __init__(
    self,
    folder: str | os.PathLike,
    *,
    columns: Sequence[str] | None = None,
    nprobe: int | None = None,
    memory_map: bool = True,
    dedup_threshold: float = DEFAULT_DEDUP_THRESHOLD,
  ):
    import faiss

    self.folder = Path(folder)
    index_path = self.folder / INDEX_FILE
    if not index_path.is_file():
      raise FileNotFoundError(
        f"no {INDEX_FILE} in {self.folder}: expected clip-retrieval's layout (image.index + metadata/*.parquet);"
        " build one with jax_aug.retrieval.builder.build_index"
      )
    # MMAP_IFC reads the whole file through a memory map (flat codes and IVF lists alike stay on disk
    # until touched); adding IO_FLAG_MMAP to it makes faiss 1.15 refuse IVF files.
    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if memory_map else 0
    self.index = faiss.read_index(str(index_path), flags)
    if nprobe is not None:
      try:
        ivf = faiss.extract_index_ivf(self.index)
      except RuntimeError:
        raise ValueError(
          f"index.nprobe={nprobe} applies to IVF indexes only, but {index_path} is a"
          f" {type(self.index).__name__}, which searches every vector: set index.nprobe=None"
        ) from None
      ivf.nprobe = int(nprobe)
    self.metadata = ParquetMetadata(self.folder / METADATA_DIR, columns)
    if self.metadata.num_rows != self.index.ntotal:
      raise ValueError(
        f"{self.folder}: {INDEX_FILE} holds {self.index.ntotal} vectors but metadata has"
        f" {self.metadata.num_rows} rows; they must correspond one to one"
      )
    self.dedup_threshold = dedup_threshold

  @property
  def dim(self) -> int:
    return int(self.index.d)

  def search_batch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw faiss search of many queries [Q, D] -> (similarities [Q, k], ids [Q, k]); no metadata."""
    return self.index.search(np.ascontiguousarray(queries, np.float32), _check_k(k))

  def search(self, query: np.ndarray, k: int, *, deduplicate: bool) -> list[Neighbour]:
    query = _check_query(query, self.dim)
    similarities, ids, embeddings = self.index.search_and_reconstruct(query[None], _check_k(k))
    found = ids[0] >= 0  # faiss pads with -1 when fewer than k vectors are reachable
    ids, similarities, embeddings = ids[0][found], similarities[0][found], embeddings[0][found]
    if deduplicate and len(ids):
      # clip back normalizes the reconstructed vectors (PQ codes are not unit length) before its detector.
      norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
      embeddings = embeddings / np.where(norms == 0, 1, norms)
      keep = [r is None for r in duplicate_reasons(embeddings, self.dedup_threshold)]
      ids, similarities = ids[keep], similarities[keep]
    metas = self.metadata.get(ids.tolist())
    return [Neighbour(id=int(i), similarity=float(s), metadata=m) for i, s, m in zip(ids, similarities, metas)]


class ClipBackUnavailableError(ConnectionError):
  """The clip back server could not be reached or kept failing after all retries."""


class ClipBackClient:
  """Embedding queries to clip-retrieval's `clip back` REST service (POST /knn-service).

  The server computes the near-duplicate filter itself, at clip-retrieval's fixed threshold 0.94.
  """

  def __init__(
    self, url: str, indice_name: str, *, timeout_s: float = 30.0, retries: int = 3, backoff_s: float = 1.0, session=None
  ):
    import requests

    if not url.startswith(("http://", "https://")):
      raise ValueError(f"clip back url must start with http:// or https://, got {url!r}")
    self.url = url.rstrip("/")
    self.indice_name = indice_name
    self.timeout_s = timeout_s
    self.retries = retries
    self.backoff_s = backoff_s
    self.session = session or requests.Session()

  def _post(self, payload: dict) -> Any:
    import requests

    endpoint = f"{self.url}/knn-service"
    last_error: Exception | None = None
    for attempt in range(self.retries + 1):
      if attempt:
        time.sleep(self.backoff_s * 2 ** (attempt - 1))
      try:
        response = self.session.post(endpoint, json=payload, timeout=self.timeout_s)
      except (requests.ConnectionError, requests.Timeout) as e:
        last_error = e
        log.warning("clip back %s: attempt %d/%d failed: %s", endpoint, attempt + 1, self.retries + 1, e)
        continue
      if response.status_code >= 500:
        last_error = RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        log.warning("clip back %s: attempt %d/%d: %s", endpoint, attempt + 1, self.retries + 1, last_error)
        continue
      if response.status_code != 200:
        raise RuntimeError(
          f"clip back {endpoint} refused the query (index {self.indice_name!r}):"
          f" HTTP {response.status_code}: {response.text[:500]}"
        )
      return response.json()
    raise ClipBackUnavailableError(
      f"clip back at {endpoint} is down or failing: {self.retries + 1} attempts within"
      f" {self.timeout_s} s each failed (last error: {last_error}). Start it (see docs/retrieval.md) or"
      " use the local faiss backend (retrieval.index.backend='local')."
    )

  def search(self, query: np.ndarray, k: int, *, deduplicate: bool) -> list[Neighbour]:
    query = _check_query(query, None)
    k = _check_k(k)
    results = self._post(
      {
        "embedding_input": query.tolist(),
        "modality": "image",
        "indice_name": self.indice_name,
        # num_images == num_result_ids: clip back attaches metadata only to the first num_images.
        "num_images": k,
        "num_result_ids": k,
        "deduplicate": bool(deduplicate),
        "use_mclip": False,
        "use_safety_model": False,
        "use_violence_detector": False,
      }
    )
    if not isinstance(results, list):
      raise RuntimeError(f"clip back {self.url} answered {str(results)[:200]!r}; expected a list of results")
    return [
      Neighbour(
        id=int(r["id"]),
        similarity=float(r["similarity"]),
        metadata={c: v for c, v in r.items() if c not in ("id", "similarity")},
      )
      for r in results
    ]


def open_backend(config) -> KnnBackend:
  """The backend named by `config.backend` ('local' or 'clip_back') with its settings."""
  if config.backend == "local":
    return LocalIndex(
      config.folder,
      columns=list(config.columns),
      nprobe=config.get("nprobe"),
      memory_map=config.memory_map,
      dedup_threshold=config.dedup_threshold,
    )
  if config.backend == "clip_back":
    if config.dedup_threshold != DEFAULT_DEDUP_THRESHOLD:
      raise ValueError(
        f"clip back's duplicate detector has a fixed threshold of {DEFAULT_DEDUP_THRESHOLD};"
        f" got dedup_threshold={config.dedup_threshold} (use the local backend to change it)"
      )
    return ClipBackClient(
      config.url, config.indice_name, timeout_s=config.timeout_s, retries=config.retries, backoff_s=config.backoff_s
    )
  raise ValueError(f"unknown retrieval index backend {config.backend!r}; expected 'local' or 'clip_back'")
