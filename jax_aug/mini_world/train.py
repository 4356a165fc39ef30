"""Trains the mini world's models in stages that resume (docs/mini_world.md, "Models"):

  clip       tiny CLIP, contrastive on the corpus          -> <out>/export/clip/ (load_clip's layout)
  vae        small AutoencoderKL on corpus images          -> <out>/export/vae/ (weights + config)
  unet       text-conditional U-Net on corpus latents      -> <out>/export/unet.safetensors
  aesthetic  linear head on tiny-CLIP image embeddings     -> <out>/export/aesthetic.safetensors
  safety     SD safety checker flagging the NSFW concept   -> <out>/export/safety_checker.safetensors

Each stage's curve is `<out>/<stage>/metrics.jsonl`; `<out>/export/manifest.json` has every exported
file's sha256 and the stage's steps and wall time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax

from jax_aug.diffusion.loading import load_clip_tokenizer
from jax_aug.io import atomic_write_json, read_json
from jax_aug.mini_world import arrays
from jax_aug.mini_world.stage_loop import run_stage, stage_dir
from jax_aug.mini_world.weights import save_params

STAGES = ("clip", "vae", "unet", "aesthetic", "safety")
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"


def sha256(path: Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def record_export(out: Path, stage: str, files: list[Path]) -> None:
  """Adds the stage's exported files (sha256) and its curve's last line to export/manifest.json."""
  manifest_path = out / "export" / MANIFEST
  manifest = read_json(manifest_path) if manifest_path.exists() else {}
  metrics = stage_dir(out, stage) / "metrics.jsonl"
  last = json.loads(metrics.read_text().strip().splitlines()[-1]) if metrics.exists() else {}
  manifest[stage] = {"files": {str(f.relative_to(out / "export")): sha256(f) for f in sorted(files)},
                     "last_metrics": last}
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
    clip_config = dict(config.clip, cache=str(cache))
    stage, model = clip_stage(_Namespace(clip_config), corpus, tokenizer, monitor, config.seed)
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


class _Namespace(dict):
  """A config block as attributes (ConfigDict blocks converted with extra fields)."""
  __getattr__ = dict.__getitem__
