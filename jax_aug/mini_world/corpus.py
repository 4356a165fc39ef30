"""The mini world's web corpus (the LAION stand-in): images + LAION-style parquet metadata.

Layout under `root` (also clip-retrieval's metadata layout, so the corpus root becomes an index folder once
`image.index` is written beside it):
  images/<shard:03d>/<i:06d>.jpg      SHARD_SIZE images per shard folder
  metadata/<shard:05d>.parquet        one row per image, in item order (row i of the sorted files = item i)
  mini_world.json                     written last: design version, seed, size (marks a complete corpus)

Item i is a pure function of (seed, i, the plan): `corpus_item` regenerates any one alone. Writing is per
shard: a shard's images go to a temporary folder renamed into place, then its parquet file is written
atomically, so a killed run resumes at the first missing shard with identical results.
"""

from __future__ import annotations

import concurrent.futures
import io
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jax_aug.io import atomic_write_bytes, atomic_write_json, read_json
from jax_aug.mini_world import captions, concepts
from jax_aug.mini_world.drawing import draw_corpus_image, jpeg_bytes

SHARD_SIZE = 1000
COMPLETE_FILE = "mini_world.json"
NSFW_VALUES = ("UNLIKELY", "UNSURE", "NSFW")
# LAION's NSFW column: the NSFW concept is mostly flagged, everything else rarely (a detector's false alarms).
NSFW_P = {True: (0.0, 0.15, 0.85), False: (0.97, 0.025, 0.005)}


def aesthetic_score(scene, family: str | None, rng: np.random.Generator) -> float:
  """LAION-scale aesthetic score: a function of what is visible plus noise (docs/mini_world.md)."""
  score = (
    5.5
    + 0.8 * (scene.style in ("photo", "painting"))
    - 0.9 * (scene.background == "clutter")
    - 0.6 * (scene.style == "sketch")
    + 0.9 * (scene.scale - 0.6)
    - 0.03 * (95 - scene.jpeg_quality)
    - 1.0 * (family in ("document", "texture"))
    + rng.normal(0, 0.5)
  )
  return float(np.clip(score, 1.0, 9.0))


def corpus_item(index: int, concept: str, seed: int = concepts.WORLD_SEED) -> tuple[bytes, dict]:
  """(JPEG bytes, metadata row) of corpus item `index`, whose concept is `concept` (from the plan)."""
  rng = np.random.default_rng([seed, 1, index])
  image, scene, background = draw_corpus_image(concept, rng)
  family = scene.concept.split(":", 1)[1] if ":" in scene.concept else None
  if concept in concepts.CONCEPT_BY_WNID:
    caption, style = captions.class_caption(concept, scene, background, rng)
  else:
    caption, style = captions.other_caption(concept, family, background, rng)
  nsfw = NSFW_VALUES[rng.choice(3, p=NSFW_P[concept == concepts.NSFW])]
  row = {
    "image_path": image_path(index),
    "url": f"miniworld://corpus/{index}",
    "caption": caption,
    "width": image.size[0],
    "height": image.size[1],
    "aesthetic": aesthetic_score(scene, family, rng),
    "NSFW": nsfw,
    "concept": concept,
    "distractor_family": family or "",
    "caption_style": style,
    "style": scene.style,
    "background": scene.background,
    "unusual_colour": scene.unusual_colour,
  }
  return jpeg_bytes(image, scene.jpeg_quality), row


def image_path(index: int) -> str:
  return f"{index // SHARD_SIZE:03d}/{index:06d}.jpg"


def _write_shard(root: Path, shard: int, plan: np.ndarray, seed: int) -> None:
  import pyarrow as pa
  import pyarrow.parquet as pq

  final = root / "images" / f"{shard:03d}"
  tmp = root / "images" / f".{shard:03d}.tmp"
  if tmp.exists():
    shutil.rmtree(tmp)
  tmp.mkdir(parents=True)
  rows = []
  for index in range(shard * SHARD_SIZE, min((shard + 1) * SHARD_SIZE, len(plan))):
    data, row = corpus_item(index, str(plan[index]), seed)
    (tmp / f"{index:06d}.jpg").write_bytes(data)
    rows.append(row)
  if final.exists():  # images of a shard whose parquet write was interrupted
    shutil.rmtree(final)
  os.replace(tmp, final)
  buffer = io.BytesIO()
  pq.write_table(pa.Table.from_pylist(rows), buffer)
  atomic_write_bytes(root / "metadata" / f"{shard:05d}.parquet", buffer.getvalue())


def write_corpus(
  root: str | os.PathLike, *, seed: int = concepts.WORLD_SEED, size: int = concepts.CORPUS_SIZE, workers: int = 1
) -> Path:
  """Writes (or completes) the corpus under `root` and returns `root`; a complete one is checked and kept.

  `workers` > 1 draws the missing shards in that many processes; a shard depends only on (seed, its items,
  the plan), so the files are the same bytes for any number of workers."""
  root = Path(root)
  info = {"design_version": concepts.DESIGN_VERSION, "seed": seed, "size": size, "image_size": concepts.IMAGE_SIZE}
  if (root / COMPLETE_FILE).exists():
    found = read_json(root / COMPLETE_FILE)
    if found != info:
      raise ValueError(f"{root} holds a mini-world corpus of {found}, not the requested {info}")
    return root
  plan = concepts.corpus_plan(seed, size)
  missing = [
    s for s in range((size + SHARD_SIZE - 1) // SHARD_SIZE) if not (root / "metadata" / f"{s:05d}.parquet").exists()
  ]
  progress = tqdm(total=len(missing), desc="mini-world corpus", unit="shard")
  if workers > 1:
    # spawn, not fork: the caller may hold JAX's threads, which a forked child must not inherit
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
      for done in concurrent.futures.as_completed([pool.submit(_write_shard, root, s, plan, seed) for s in missing]):
        done.result()
        progress.update()
  else:
    for shard in missing:
      _write_shard(root, shard, plan, seed)
      progress.update()
  progress.close()
  atomic_write_json(root / COMPLETE_FILE, info)
  return root


def read_metadata(root: str | os.PathLike, columns=None):
  """The corpus's metadata as one pyarrow table (row i = item i)."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  files = sorted((Path(root) / "metadata").glob("*.parquet"))
  if not files:
    raise FileNotFoundError(f"no corpus metadata under {root}/metadata (write it with write_corpus)")
  return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
