"""Retrieval as an augmentation method: per class, query the index with the no-ws simple prompt, raise k
along the paper's schedule until `images_per_class` candidates survive the filters and the download, and
write them as an augmentation set; classes that never get there go to the study's exclusion list.

Order of the filters per candidate (each recorded with its reason):
  index:    near-duplicates (clip-retrieval's detector, inside the kNN query)
  metadata: NSFW flag, aesthetic score column (both before any download)
  download: fetch (img2dataset or local file), bounded decode (EXIF orientation applied, transparency
            over download.background), resize
  size:     shorter side below filters.min_shorter_side, aspect ratio above filters.max_aspect_ratio
  pixels:   SD safety checker; aesthetic predictor on the image's CLIP embedding when there is no column

Resumable and deterministic: every candidate fetched is recorded in `candidates.jsonl` (and, when kept,
its image in `cache/`) before the next is used, so a rerun never fetches it again. A class's set is the
first `images_per_class` survivors in rank order of the k at which it filled up; fetch outcomes do not
depend on order or on what else was fetched, so a killed and resumed run selects the same images.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from jax_aug import metrics as metrics_lib
from jax_aug.data.augmentation_set import AugmentationSetWriter, item_key
from jax_aug.data.classes import DatasetClasses, imagenet
from jax_aug.data.prompts import build_prompt
from jax_aug.data.subsets import EXCLUSIONS_FILE, write_exclusions
from jax_aug.io import JsonlManifest, atomic_write_bytes, load_image_file, read_json
from jax_aug.retrieval import download, filters
from jax_aug.retrieval.gradual_k import k_schedule
from jax_aug.retrieval.index import KnnBackend, Neighbour

log = logging.getLogger(__name__)

METHOD = "retrieval"
AUGMENTATION_DIR = "augmentation_set"
PROMPT_STRATEGY = "simple_no_ws"  # the paper's query: "A photo of w(n)." (Sec. 3.2, method 10)


@dataclasses.dataclass
class Components:
  """What a retrieval run uses; `retrieve` builds them from the config, tests may pass their own."""

  embed_queries: Callable[[Sequence[str]], np.ndarray]  # prompts -> L2-normalized [N, D]
  backend: KnnBackend
  # uint8 images [B, H, W, 3] of one size -> bool [B] (True = unsafe); None only if the config disables it.
  safety_fn: Callable[[np.ndarray], np.ndarray] | None
  # PIL images -> aesthetic scores [B]; None when scores come only from the metadata column.
  aesthetic_fn: Callable[[Sequence[Image.Image]], np.ndarray] | None


def exclusion_list_path(workdir: str | os.PathLike) -> Path:
  return Path(workdir) / EXCLUSIONS_FILE


def config_classes(config) -> DatasetClasses:
  """The dataset `config.classes` belong to: the file `config.dataset_classes` names (the data stage's
  splits/classes.json, jax_aug.data.classes), or ImageNet when it is empty."""
  if not config.get("dataset_classes"):
    return imagenet()
  return DatasetClasses.from_json(read_json(config.dataset_classes))


def class_wnids(config) -> list[str]:
  """The ids of the classes to retrieve: `config.classes`, or every class of the dataset when None."""
  classes = config_classes(config)
  wnids = classes.ids if config.classes is None else list(config.classes)
  unknown = [w for w in wnids if w not in classes]
  if unknown:
    raise ValueError(f"retrieval: config.classes names {unknown[0]!r}, not a class of dataset {classes.dataset}")
  return wnids


def _png(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


class _Run:
  """The on-disk state of one retrieval run (see module docstring)."""

  def __init__(self, config, workdir: Path, components: Components):
    self.config = config
    self.workdir = workdir
    self.c = components
    self.candidates = JsonlManifest(workdir / "candidates.jsonl")
    self.classes = JsonlManifest(workdir / "classes.jsonl")
    # metrics.jsonl's rows ("event": fetch, k_step, class) also go to <workdir>/tensorboard as "<event>/<field>",
    # at step = the row's line in metrics.jsonl (a resumed run appends, so it continues the curves).
    self.metrics = metrics_lib.MetricsWriter(workdir / "metrics.jsonl", workdir / metrics_lib.TENSORBOARD_DIR)
    # (wnid, id) -> record of every candidate fetched so far
    self.fetched = {(r["wnid"], r["id"]): r for r in self.candidates.read()}
    self.writer = AugmentationSetWriter(workdir / AUGMENTATION_DIR, METHOD)
    self.schedule = k_schedule(config.images_per_class, config.k_factor, config.max_multiple)

  # -- filters on metadata, before any download ---------------------------------------------------------
  def metadata_reasons(self, neighbours: Sequence[Neighbour]) -> list[str | None]:
    f = self.config.filters
    reasons: list[str | None] = [None] * len(neighbours)
    if f.nsfw_column:
      flags = [n.metadata.get(f.nsfw_column) for n in neighbours]
      reasons = [a or b for a, b in zip(reasons, filters.nsfw_flag_reasons(flags, f.nsfw_unsafe_values))]
    if f.min_aesthetic is not None and self.c.aesthetic_fn is None:
      missing = [n.id for n in neighbours if n.metadata.get(f.aesthetic_column) is None]
      if missing:
        raise ValueError(
          f"aesthetic filter (min {f.min_aesthetic}) needs scores: index rows {missing[:5]} have no"
          f" {f.aesthetic_column!r} column value and no aesthetic predictor is configured"
          " (set filters.aesthetic_predictor to LAION's head, or filters.min_aesthetic=None to disable)"
        )
      scores = [n.metadata.get(f.aesthetic_column) for n in neighbours]
      reasons = [a or b for a, b in zip(reasons, filters.aesthetic_reasons(scores, f.min_aesthetic))]
    return reasons

  # -- fetching and the pixel filters -------------------------------------------------------------------
  def fetch(self, wnid: str, k: int, neighbours: Sequence[Neighbour]) -> None:
    cfg = self.config.download
    if cfg.source == "url":
      items = [(n.id, n.metadata.get(cfg.url_column)) for n in neighbours]
      outcomes = download.fetch_urls(items, cfg, scratch=self.workdir / "scratch")
    elif cfg.source == "local":
      items = [(n.id, n.metadata.get(cfg.path_column)) for n in neighbours]
      outcomes = download.fetch_local(items, cfg, root=cfg.image_root)
    else:
      raise ValueError(f"unknown download.source {cfg.source!r}; expected 'url' or 'local'")
    reasons = [o.error and f"{o.status}: {o.error}" for o in outcomes]
    # Per candidate, the stage that dropped it (or "kept"): counted in metrics.jsonl.
    stages = ["kept" if o.image is not None else o.status for o in outcomes]
    ok = [i for i, o in enumerate(outcomes) if o.image is not None]
    sizes = [outcomes[i].size for i in ok]
    for stage, stage_reasons in (
      ("min_shorter_side", filters.shorter_side_reasons(sizes, self.config.filters.min_shorter_side)),
      ("max_aspect_ratio", filters.aspect_ratio_reasons(sizes, self.config.filters.max_aspect_ratio)),
    ):
      for i, reason in zip(ok, stage_reasons):
        if reason is not None and reasons[i] is None:
          reasons[i], stages[i] = reason, stage
    ok = [i for i in ok if reasons[i] is None]
    aesthetic = [n.metadata.get(self.config.filters.aesthetic_column) for n in neighbours]
    if ok and self.c.safety_fn is not None:
      flagged = self._safety([outcomes[i].image for i in ok])
      for i, reason in zip(ok, filters.safety_checker_reasons(flagged)):
        reasons[i] = reason
        stages[i] = "kept" if reason is None else "safety_checker"
    ok = [i for i in ok if reasons[i] is None]
    if ok and self.c.aesthetic_fn is not None and self.config.filters.min_aesthetic is not None:
      scores = np.asarray(self.c.aesthetic_fn([outcomes[i].image for i in ok]), np.float64)
      for i, score, reason in zip(ok, scores, filters.aesthetic_reasons(scores, self.config.filters.min_aesthetic)):
        aesthetic[i], reasons[i] = float(score), reason
        stages[i] = "kept" if reason is None else "aesthetic_predictor"
    records = []
    for n, outcome, reason, score in zip(neighbours, outcomes, reasons, aesthetic):
      record = {
        "wnid": wnid,
        "id": n.id,
        "k": k,
        "similarity": n.similarity,
        "kept": reason is None,
        "reason": reason,
        "aesthetic": score,
        "url": n.metadata.get(self.config.download.url_column),
        "caption": n.metadata.get("caption"),
      }
      if reason is None:
        # The image is on disk before its record: a record marked kept always has its image.
        atomic_write_bytes(self.cache_path(wnid, n.id), _png(outcome.image))
      records.append(record)
    self.candidates.append_many(records)
    for r in records:
      self.fetched[(wnid, r["id"])] = r
    counts: dict[str, int] = {}
    for stage in stages:
      counts[stage] = counts.get(stage, 0) + 1
    self.log({"event": "fetch", "wnid": wnid, "k": k, "fetched": len(records), **counts, "time": time.time()})

  def log(self, row: dict) -> None:
    self.metrics.write_row(row, prefix=f"{row['event']}/")

  def _safety(self, images: Sequence[Image.Image]) -> np.ndarray:
    # The checker takes one array, so images of different sizes are checked one by one.
    return np.concatenate([np.asarray(self.c.safety_fn(np.asarray(im)[None]), bool).reshape(1) for im in images])

  def cache_path(self, wnid: str, index_id: int) -> Path:
    return self.workdir / "cache" / wnid / f"{int(index_id)}.png"

  # -- one class ----------------------------------------------------------------------------------------
  def to_fetch(self, wnid: str, neighbours: Sequence[Neighbour], reasons: Sequence[str | None]) -> list[int]:
    """Positions of unfetched candidates that could still be among the first `images_per_class` survivors."""
    needed, possible = [], 0
    for i, (n, reason) in enumerate(zip(neighbours, reasons)):
      if possible >= self.config.images_per_class:
        break
      if reason is not None:
        continue
      record = self.fetched.get((wnid, n.id))
      if record is None:
        needed.append(i)
        possible += 1
      elif record["kept"]:
        possible += 1
    return needed

  def run_class(self, wnid: str, query: np.ndarray) -> dict:
    target = self.config.images_per_class
    survivors: list[Neighbour] = []
    for k in self.schedule:
      neighbours = self.c.backend.search(query, k, deduplicate=self.config.index.deduplicate)
      reasons = self.metadata_reasons(neighbours)
      while needed := self.to_fetch(wnid, neighbours, reasons):
        chunk = needed[: self.config.download.chunk_size]
        self.fetch(wnid, k, [neighbours[i] for i in chunk])
      survivors = [
        n for n, reason in zip(neighbours, reasons) if reason is None and self.fetched.get((wnid, n.id), {}).get("kept")
      ][:target]
      self.log(
        {
          "event": "k_step",
          "wnid": wnid,
          "k": k,
          "neighbours": len(neighbours),
          "dropped_by_metadata": sum(r is not None for r in reasons),
          "survivors": len(survivors),
          "time": time.time(),
        }
      )
      if len(survivors) >= target:
        self.write_class(wnid, k, survivors)
        return {"wnid": wnid, "status": "complete", "k": k, "images": target}
    reason = (
      f"only {len(survivors)} of {target} images survived download and filters at the largest"
      f" k={self.schedule[-1]} ({self.config.max_multiple} x {self.config.k_factor} x {target})"
    )
    return {"wnid": wnid, "status": "excluded", "k": self.schedule[-1], "images": len(survivors), "reason": reason}

  def write_class(self, wnid: str, k: int, survivors: Sequence[Neighbour]) -> None:
    for rank, n in enumerate(survivors):
      key = item_key(wnid, rank)
      if self.writer.has(key):
        continue
      record = self.fetched[(wnid, n.id)]
      image = load_image_file(self.cache_path(wnid, n.id))
      self.writer.add(
        image,
        {
          "wnid": wnid,
          "key": key,
          "index_id": n.id,
          "url": record["url"],
          "caption": record["caption"],
          "similarity": n.similarity,
          "aesthetic": record["aesthetic"],
          "k": k,
        },
      )


def run_retrieval(config, workdir: str | os.PathLike, components: Components) -> Path:
  """Retrieves every class of `config.classes` into `<workdir>/augmentation_set` and writes the
  exclusion list `<workdir>/excluded_classes.json` ({wnid: reason}); returns the augmentation set dir."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  run = _Run(config, workdir, components)
  wnids = class_wnids(config)
  done = {r["wnid"]: r for r in run.classes.read()}
  todo = [w for w in wnids if w not in done]
  if todo:
    classes = config_classes(config)
    prompts = [build_prompt(PROMPT_STRATEGY, classes[w], 0, config.seed) for w in todo]
    queries = components.embed_queries(prompts)
    for wnid, prompt, query in zip(tqdm(todo, desc="retrieval", unit="class"), prompts, queries):
      result = run.run_class(wnid, query)
      run.classes.append(result)
      run.log({"event": "class", **result, "query": prompt, "time": time.time()})
      done[wnid] = result
  run.metrics.close()
  excluded = {w: done[w]["reason"] for w in wnids if done[w]["status"] == "excluded"}
  for wnid, reason in excluded.items():
    log.warning("retrieval: class %s excluded: %s", wnid, reason)
  write_exclusions(exclusion_list_path(workdir), excluded)
  return workdir / AUGMENTATION_DIR


def components_from_config(config, workdir: Path) -> tuple[object, Components]:
  """The components named by `config`, and the config with the synthetic index's paths filled in."""
  from jax_aug.retrieval import aesthetic, builder, clip_model, index

  clip = (
    clip_model.build_tiny_clip(config.clip.seed, config.clip.tiny_image_size)
    if config.clip.model == "tiny"
    else clip_model.load_clip(config.clip.model, from_pt=config.clip.from_pt)
  )
  index_config = config.index
  if index_config.backend == "local" and not index_config.folder:
    # No index given: the tiny stand-in for LAION, drawn and indexed into the workdir.
    synthetic = index_config.synthetic
    folder = builder.build_synthetic_index(
      workdir / "synthetic_index",
      clip,
      [config_classes(config)[w] for w in class_wnids(config)],
      per_class=synthetic.per_class,
      image_size=synthetic.image_size,
      seed=synthetic.seed,
    )
    index_config = index_config.copy_and_resolve_references()
    index_config.folder = str(folder)
    if config.download.source == "local" and not config.download.image_root:
      config = config.copy_and_resolve_references()
      config.download.image_root = str(folder / "images")
  safety_fn = None
  if config.filters.safety_checker:
    from jax_aug.diffusion.loading import load_sd
    from jax_aug.diffusion.safety import make_safety_fn

    safety_fn = make_safety_fn(load_sd(config.filters.safety_checker))
  aesthetic_fn = None
  if config.filters.aesthetic_predictor:
    head = aesthetic.load_aesthetic_head(config.filters.aesthetic_predictor)
    aesthetic_fn = lambda images: head(clip_model.embed_images(clip, images))
  return config, Components(
    embed_queries=lambda prompts: clip_model.embed_texts(clip, prompts),
    backend=index.open_backend(index_config),
    safety_fn=safety_fn,
    aesthetic_fn=aesthetic_fn,
  )


def retrieve(config, workdir: str | os.PathLike) -> Path:
  """The study's retrieval stage: returns `<workdir>/augmentation_set` (method "retrieval") and leaves
  the exclusion list in `<workdir>/excluded_classes.json`."""
  workdir = Path(workdir)
  if config.download.source == "url":
    download.distributor(config.download)  # a missing pyspark stops here, not after the first queries
  config, components = components_from_config(config, workdir)
  return run_retrieval(config, workdir, components)
