"""The mini world on disk, ready for a study (issue 14): the corpus and the target dataset drawn from the seed,
the trained weights checked against their manifest, Stable Diffusion assembled as a diffusers folder for
`load_sd`, and the retrieval index over the corpus's tiny-CLIP image embeddings in clip-retrieval's layout.

The index's `image_path` column is relative to `<folder>/corpus/images`, so the retrieval's "local" download
reads the retrieved corpus images as a real run fetches LAION's URLs. Every part resumes (the corpus per
shard, the target per class, the SD folder and the index each built aside and renamed into place) and
`world.json`, written last, records what was prepared; a folder prepared (or partly prepared) from another
seed, size or set of weights is refused rather than mixed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from jax_aug.io import atomic_write_json, read_json
from jax_aug.mini_world import concepts
from jax_aug.mini_world.train import MANIFEST, sha256

# Where the package ships the trained weights (the export folder of scripts/train_mini_world.py).
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "mini_world"
WORLD_FILE = "world.json"
PREPARING_FILE = "world.preparing.json"
MAX_SHIPPED_BYTES = 30 * 10**6  # the budget for the weights the package ships
# LAION's columns as clip-retrieval serves them, the local path the "local" download reads, and the generator's
# ground truth (which a real index lacks; the study never reads it, the quality checks do).
INDEX_COLUMNS = ("url", "caption", "image_path", "aesthetic", "NSFW", "concept")


@dataclasses.dataclass(frozen=True)
class WorldPaths:
  root: Path

  @property
  def corpus(self) -> Path:
    return self.root / "corpus"

  @property
  def corpus_images(self) -> Path:  # the retrieval's `download.image_root`
    return self.corpus / "images"

  @property
  def target(self) -> Path:  # the ILSVRC folder layout: train/<wnid>/, val/<wnid>/
    return self.root / "target"

  @property
  def sd(self) -> Path:
    return self.root / "sd"

  @property
  def index(self) -> Path:
    return self.root / "index"


def verify_weights(weights: str | os.PathLike) -> dict:
  """The weights folder's manifest, after checking every file it lists against its sha256."""
  weights = Path(weights)
  if not (weights / MANIFEST).is_file():
    raise FileNotFoundError(
      f"no mini-world weights at {weights} ({MANIFEST} missing): train them with scripts/train_mini_world.py and"
      " pass its export folder (run_study.py: --config.mini_world.weights=<folder>; docs/mini_world.md)"
    )
  manifest = read_json(weights / MANIFEST)
  for stage, entry in manifest.items():
    for relative, expected in entry["files"].items():
      path = weights / relative
      if not path.is_file():
        raise FileNotFoundError(f"mini-world weights: {path} ({stage}) is listed in {weights / MANIFEST} but missing")
      actual = sha256(path)
      if actual != expected:
        raise ValueError(
          f"mini-world weights: {path} ({stage}) has sha256 {actual}, its manifest says {expected}: the file is"
          " damaged or was replaced; reinstall the package or retrain"
        )
  return manifest


def install_weights(
  export: str | os.PathLike, destination: str | os.PathLike = ASSETS, *, max_bytes: int = MAX_SHIPPED_BYTES
) -> Path:
  """Copies the files an export folder's manifest lists (checked against their sha256 before and after) and
  the manifest into `destination`, replacing what was there in one rename; refuses more than `max_bytes`."""
  export, destination = Path(export), Path(destination)
  manifest = verify_weights(export)
  files = sorted({relative for entry in manifest.values() for relative in entry["files"]})
  total = sum((export / f).stat().st_size for f in files)
  if total > max_bytes:
    raise ValueError(f"the weights in {export} take {total:,} bytes; the package ships at most {max_bytes:,}")
  staging = destination.with_name(f".{destination.name}.tmp")
  shutil.rmtree(staging, ignore_errors=True)
  for relative in files:
    (staging / relative).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(export / relative, staging / relative)
  shutil.copyfile(export / MANIFEST, staging / MANIFEST)
  verify_weights(staging)
  old = destination.with_name(f".{destination.name}.old")
  shutil.rmtree(old, ignore_errors=True)
  if destination.exists():
    os.replace(destination, old)
  os.replace(staging, destination)
  shutil.rmtree(old, ignore_errors=True)
  return destination


def prepare_world(
  folder: str | os.PathLike,
  weights: str | os.PathLike = ASSETS,
  *,
  seed: int = concepts.WORLD_SEED,
  corpus_size: int = concepts.CORPUS_SIZE,
  workers: int = 1,
) -> WorldPaths:
  """Prepares (or completes, or just returns) the mini world under `folder` with the weights in `weights`."""
  paths = WorldPaths(Path(folder))
  verify_weights(weights)
  record = {
    "design_version": concepts.DESIGN_VERSION,
    "seed": seed,
    "corpus_size": corpus_size,
    "weights": str(Path(weights).resolve()),
    "weights_manifest_sha256": sha256(Path(weights) / MANIFEST),
  }
  # An unfinished preparation left its record in PREPARING_FILE: what it built may only be completed with the
  # same record, never mixed with another world's parts. The weights count by their manifest (which hashes every
  # file), not by their folder: every clone of the package shares the prepared world of the default cache.
  for name in (WORLD_FILE, PREPARING_FILE):
    if (paths.root / name).exists():
      found = read_json(paths.root / name)
      if _identity(found) != _identity(record):
        raise ValueError(
          f"{paths.root} holds (parts of) the mini world {found}, not the requested {record}: prepare this one"
          " elsewhere (--config.mini_world.folder=...) or delete that folder; a study never mixes two worlds"
        )
      if name == WORLD_FILE:
        return paths
  from jax_aug.mini_world.corpus import write_corpus
  from jax_aug.mini_world.target import write_target

  atomic_write_json(paths.root / PREPARING_FILE, record)
  write_corpus(paths.corpus, seed=seed, size=corpus_size, workers=workers)
  write_target(paths.target, seed=seed)
  _build_aside(paths.sd, lambda tmp: _assemble(weights, tmp))
  _build_aside(paths.index, lambda tmp: _index(paths, weights, tmp))
  atomic_write_json(paths.root / WORLD_FILE, record)
  (paths.root / PREPARING_FILE).unlink()
  return paths


def _identity(record: dict) -> dict:
  """What makes two worlds the same: the record less the weights' folder."""
  return {key: value for key, value in record.items() if key != "weights"}


def _build_aside(final: Path, build) -> None:
  """Builds `final` in a sibling temporary folder and renames it into place (a killed build leaves no half)."""
  if final.exists():
    return
  tmp = final.with_name(f".{final.name}.tmp")
  shutil.rmtree(tmp, ignore_errors=True)
  build(tmp)
  os.replace(tmp, final)


def _assemble(weights: str | os.PathLike, out: Path) -> None:
  from jax_aug.mini_world.assemble import assemble_sd

  assemble_sd(weights, out)


def _index(paths: WorldPaths, weights: str | os.PathLike, out: Path) -> None:
  from jax_aug.mini_world import arrays, quality
  from jax_aug.mini_world.corpus import read_metadata
  from jax_aug.retrieval.clip_model import embed_images, load_clip

  metadata = read_metadata(paths.corpus, columns=list(INDEX_COLUMNS))
  images = arrays.load_images([str(paths.corpus_images / p) for p in metadata["image_path"].to_pylist()], "decoding corpus")
  embeddings = embed_images(
    load_clip(str(Path(weights) / "clip")), list(images), batch_size=256, progress="embedding corpus"
  )
  quality.build_corpus_index(out, embeddings, metadata)
