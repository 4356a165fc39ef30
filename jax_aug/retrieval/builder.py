"""Index builder: embeds a local image-text collection with the CLIP image tower (JAX) and writes
clip-retrieval's layout, so users can index their own collection and tests can build small indexes.

Layout (what `clip back` and `LocalIndex` read):
  <folder>/image.index                  faiss index of L2-normalized image embeddings (inner product)
  <folder>/metadata/00000.parquet, ...  row i of the files in sorted order = vector id i
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jax_aug.data.imagenet_classes import ClassInfo
from jax_aug.io import atomic_write_bytes, load_image_file
from jax_aug.retrieval.clip_model import ClipModel, embed_images
from jax_aug.retrieval.index import INDEX_FILE, METADATA_DIR


def make_faiss_index(embeddings: np.ndarray, index_factory: str = "Flat", *, train_size: int = 100_000, seed: int = 0):
  """An inner-product faiss index over `embeddings` [N, D]; `index_factory` is faiss's string
  ("Flat", "IVF1024,PQ64", ...). Trainable indexes train on at most `train_size` vectors drawn with `seed`."""
  import faiss

  embeddings = np.ascontiguousarray(embeddings, np.float32)
  index = faiss.index_factory(embeddings.shape[1], index_factory, faiss.METRIC_INNER_PRODUCT)
  if not index.is_trained:
    rng = np.random.default_rng(seed)
    sample = embeddings[np.sort(rng.choice(len(embeddings), min(train_size, len(embeddings)), replace=False))]
    index.train(sample)
  index.add(embeddings)
  return index


def write_faiss_index(path: str | os.PathLike, index) -> None:
  """faiss writes to a path; a temp name in the same folder + rename keeps the write atomic."""
  import faiss

  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  os.close(fd)
  try:
    faiss.write_index(index, tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_index(
  folder: str | os.PathLike,
  embeddings: np.ndarray,
  metadata: Mapping[str, Sequence],
  *,
  index_factory: str = "Flat",
  rows_per_file: int = 1_000_000,
  seed: int = 0,
) -> Path:
  """Writes `embeddings` [N, D] (L2-normalized) and per-row `metadata` columns in clip-retrieval's layout."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  embeddings = np.asarray(embeddings, np.float32)
  if embeddings.ndim != 2 or not len(embeddings):
    raise ValueError(f"embeddings must be a non-empty [N, D] array, got shape {list(embeddings.shape)}")
  if not np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3):
    raise ValueError("embeddings must be L2-normalized (CLIP retrieval compares by cosine = inner product)")
  for name, column in metadata.items():
    if len(column) != len(embeddings):
      raise ValueError(f"metadata column {name!r} has {len(column)} rows; expected one per embedding ({len(embeddings)})")
  folder = Path(folder)
  table = pa.table({name: list(column) for name, column in metadata.items()})
  for number, start in enumerate(range(0, len(embeddings), rows_per_file)):
    buffer = io.BytesIO()
    pq.write_table(table.slice(start, rows_per_file), buffer)
    atomic_write_bytes(folder / METADATA_DIR / f"{number:05d}.parquet", buffer.getvalue())
  write_faiss_index(folder / INDEX_FILE, make_faiss_index(embeddings, index_factory, seed=seed))
  return folder


def build_index(
  folder: str | os.PathLike,
  clip: ClipModel,
  collection: Sequence[Mapping],
  *,
  image_root: str | os.PathLike,
  index_factory: str = "Flat",
  batch_size: int = 32,
  max_bytes: int | None = None,
  max_pixels: int | None = None,
) -> Path:
  """Indexes a collection of rows {"image_path": path relative to `image_root`, "caption": ..., other
  columns (url, aesthetic, NSFW, ...)}: every image is read with bounded decoding and embedded with
  `clip`'s image tower; all columns become metadata."""
  if not collection:
    raise ValueError("build_index: the collection is empty")
  columns = list(collection[0])
  if "image_path" not in columns:
    raise ValueError(f"build_index: rows need an 'image_path' column (relative to image_root); got {columns}")
  limits = {k: v for k, v in (("max_bytes", max_bytes), ("max_pixels", max_pixels)) if v is not None}
  root = Path(image_root)
  embeddings = []
  for start in tqdm(range(0, len(collection), batch_size), desc="embedding images", unit="batch"):
    batch = collection[start : start + batch_size]
    images = [load_image_file(root / row["image_path"], **limits) for row in batch]
    embeddings.append(embed_images(clip, images, batch_size=batch_size))
  metadata = {c: [row.get(c) for row in collection] for c in columns}
  return write_index(folder, np.concatenate(embeddings), metadata, index_factory=index_factory)


def build_synthetic_index(
  folder: str | os.PathLike,
  clip: ClipModel,
  classes: Sequence[ClassInfo],
  *,
  per_class: int,
  image_size: int,
  seed: int,
  index_factory: str = "Flat",
) -> Path:
  """A small collection drawn by `jax_aug.data.synthetic` (the tiny config's stand-in for LAION): images
  under `<folder>/images`, captions "A photo of <name>.", a synthetic aesthetic score spread around the
  paper's threshold 5 and LAION's NSFW column, indexed with `clip`. Already built: returned as is."""
  from jax_aug.data.synthetic import draw_image

  folder = Path(folder)
  if (folder / INDEX_FILE).is_file():
    return folder
  rng = np.random.default_rng(seed)
  collection = []
  for position, cls in enumerate(classes):
    wnid = cls.wnid
    for i in range(per_class):
      relative = f"{wnid}/{i:05d}.png"
      buffer = io.BytesIO()
      draw_image(position, len(classes), rng, image_size).save(buffer, format="PNG")
      atomic_write_bytes(folder / "images" / relative, buffer.getvalue())
      collection.append(
        {
          "image_path": relative,
          "caption": f"A photo of {cls.name}.",
          "url": f"synthetic://{wnid}/{i}",
          "aesthetic": float(rng.uniform(3.5, 8.0)),
          "NSFW": "UNLIKELY",
        }
      )
  return build_index(folder, clip, collection, image_root=folder / "images", index_factory=index_factory)
