"""Trains the mini world's models in stages that resume (docs/mini_world.md, "Models"):

  clip       tiny CLIP, contrastive on the corpus          -> <out>/export/clip/ (load_clip's layout)
  vae        small AutoencoderKL on corpus images          -> <out>/export/vae/ (weights + config)
  unet       text-conditional U-Net on corpus latents      -> <out>/export/unet/weights.safetensors
  aesthetic  linear head on tiny-CLIP image embeddings     -> <out>/export/aesthetic.safetensors
  safety     SD safety checker flagging the NSFW concept   -> <out>/export/safety_checker/weights.safetensors

`jax_aug.mini_world.assemble.assemble_sd(<out>/export, folder)` makes the diffusers folder load_sd reads.

Each stage's curve is `<out>/<stage>/metrics.jsonl`; `<out>/export/manifest.json` has every exported
file's sha256 and the stage's steps and wall time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path

import jax

from jax_aug.diffusion.loading import load_clip_tokenizer
from jax_aug.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from jax_aug.mini_world import arrays, concepts
from jax_aug.mini_world.assemble import WEIGHTS
from jax_aug.mini_world.stage_loop import run_stage, stage_dir
from jax_aug.mini_world.weights import load_params, save_params
from jax_aug.retrieval.clip_model import load_clip

STAGES = ("clip", "vae", "unet", "aesthetic", "safety")
MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def record_export(out: Path, stage: str, files: list[Path]) -> None:
  """Adds the stage's exported files (sha256) and its curve's last line to export/manifest.json, under a lock:
  stages trained side by side (scripts/train_mini_world_accelerator.sh) may finish together."""
  manifest_path = out / "export" / MANIFEST
  metrics = stage_dir(out, stage) / "metrics.jsonl"
  last = json.loads(metrics.read_text().strip().splitlines()[-1]) if metrics.exists() else {}
  entry = {"files": {str(f.relative_to(out / "export")): sha256(f) for f in sorted(files)}, "last_metrics": last}
  manifest_path.parent.mkdir(parents=True, exist_ok=True)
  with open(manifest_path.with_name(MANIFEST + ".lock"), "w", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    manifest = read_json(manifest_path) if manifest_path.exists() else {}
    manifest[stage] = entry
    atomic_write_json(manifest_path, manifest)


def train(config, data: str | Path, out: str | Path) -> None:
  data, out = Path(data), Path(out)
  cache = out / "cache"
  stages = [s.strip() for s in config.stages.split(",") if s.strip()]
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ValueError(f"unknown mini-world training stages {unknown}; expected some of {STAGES}")
  corpus = arrays.CorpusArrays(data / "corpus", cache)
  tokenizer = load_clip_tokenizer()
  key = jax.random.key(config.seed)
  if "clip" in stages:
    from jax_aug.mini_world.train_clip import clip_stage, export_clip

    monitor = arrays.target_arrays(data / "target", "train", cache, per_class=config.clip.eval_per_class)
    stage, model = clip_stage(_Namespace(config.clip, cache=str(cache)), corpus, tokenizer, monitor, config.seed)
    state = run_stage(stage, out, jax.random.fold_in(key, STAGES.index("clip")))
    folder = export_clip(model, state["params"], tokenizer, out / "export" / "clip")
    record_export(out, "clip", [p for p in folder.iterdir() if p.is_file()])
  if "vae" in stages:
    from jax_aug.mini_world.train_vae import HOLDOUT, scaling_factor, vae_stage

    stage, vae = vae_stage(_Namespace(config.vae), corpus, config.seed)
    state = run_stage(stage, out, jax.random.fold_in(key, STAGES.index("vae")))
    folder = out / "export" / "vae"
    save_params(folder / WEIGHTS, state["params"])
    vae_config = dict(vae.config, scaling_factor=scaling_factor(vae, state["params"], corpus.images[-HOLDOUT:]))
    atomic_write_json(folder / "config.json", {k: v for k, v in vae_config.items() if not k.startswith("_")})
    record_export(out, "vae", [folder / WEIGHTS, folder / "config.json"])
  if "unet" in stages:
    from jax_aug.mini_world.train_unet import unet_stage
    from jax_aug.mini_world.train_vae import build_vae

    clip = load_clip(str(_exported(out, "clip")))
    vae_folder = _exported(out, "vae")
    scaling = read_json(vae_folder / "config.json")["scaling_factor"]
    stage, _ = unet_stage(
      _Namespace(config.unet, cache=str(cache)),
      corpus,
      tokenizer,
      vae=build_vae(),
      vae_params=load_params(vae_folder / WEIGHTS),
      scaling=scaling,
      text_params={"text_model": clip.params["text_model"]},
      seed=config.seed,
    )
    state = run_stage(stage, out, jax.random.fold_in(key, STAGES.index("unet")))
    path = out / "export" / "unet" / WEIGHTS
    save_params(path, state["params"])
    record_export(out, "unet", [path])
  if "aesthetic" in stages or "safety" in stages:
    from jax_aug.mini_world import heads
    from jax_aug.retrieval.clip_model import embed_images

    clip = load_clip(str(_exported(out, "clip")))
    embeddings = arrays.cached_embeddings(
      cache,
      "corpus_clip_image",
      _exported(out, "clip"),
      lambda: embed_images(clip, list(corpus.images), batch_size=256, progress="embedding corpus"),
    )
  if "aesthetic" in stages:
    from safetensors.numpy import save

    tensors, report = heads.fit_aesthetic(
      embeddings, corpus.aesthetic, ridge=config.aesthetic.ridge, holdout=config.aesthetic.holdout
    )
    path = out / "export" / "aesthetic.safetensors"
    atomic_write_bytes(path, save(tensors))
    _log_fit(out, "aesthetic", report)
    record_export(out, "aesthetic", [path])
  if "safety" in stages:
    direction, threshold, report = heads.fit_safety(
      embeddings, corpus.concepts == concepts.NSFW, false_alarm=config.safety.false_alarm, holdout=config.safety.holdout
    )
    path = out / "export" / "safety_checker" / WEIGHTS
    save_params(path, heads.safety_checker_params(clip.params, direction, threshold))
    _log_fit(out, "safety", report)
    record_export(out, "safety", [path])


def _exported(out: Path, stage: str) -> Path:
  folder = out / "export" / stage
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder} is missing: run the {stage!r} stage first (--config.stages={stage})")
  return folder


def _log_fit(out: Path, stage: str, report: dict) -> None:
  folder = stage_dir(out, stage)
  folder.mkdir(parents=True, exist_ok=True)
  atomic_write_text(folder / "metrics.jsonl", json.dumps(report) + "\n")


class _Namespace(dict):
  """A config block (ConfigDict) as a plain dict read by attribute, with extra fields (the cache folder)."""

  __getattr__ = dict.__getitem__

  def __init__(self, block, **extra):
    super().__init__(dict(block), **extra)
