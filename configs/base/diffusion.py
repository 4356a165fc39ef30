"""Sampling block (jax_aug/diffusion, sample.py): model, sampler, images per class, safety checker.

Paper (Sec. 3): SD v1.4 at 512 px for every method, 390 images per class, flagged images replaced.
Sampler defaults are SD v1.4's: PNDM, 50 steps, classifier-free guidance 7.5. Tiny runs the same code on
a tiny random SD built into the workdir (32 px, 4 steps), seconds on a CPU.
"""

import ml_collections


def get(scale: str) -> ml_collections.ConfigDict:
  tiny = scale == "tiny"
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict()
  # Local diffusers folder or hub id; empty: build the tiny random SD into <workdir>/tiny_sd.
  config.model.path = "" if tiny else "CompVis/stable-diffusion-v1-4"
  config.model.revision = "" if tiny else "flax"
  config.model.from_pt = False
  config.model.dtype = "float32" if tiny else "bfloat16"
  config.model.tiny_seed = 0
  config.num_inference_steps = 4 if tiny else 50
  config.guidance_scale = 7.5
  config.scheduler = "pndm"  # pndm | ddim, configured from the checkpoint (engine.SCHEDULERS)
  config.resolution = 0 if tiny else 512  # 0: the model's native size
  # The class name n of the simple / CLIP prompts: "all" lemmas joined by ", " (paper), or "first" (the
  # paper's ablation, Sec. 3.2; jax_aug/data/prompts.py).
  config.prompt_lemmas = "all"
  config.boomerang_strength = 0.0  # > 0 only for Boomerang (configs/methods/boomerang.py)
  config.images_per_class = 2 if tiny else 390
  # Global batch over this host's devices (a multiple of their count): 8 = one per GPU on 8 GPUs, or
  # 8 on one 80 GB GPU at 512 px bfloat16.
  config.batch_size = 2 if tiny else 8
  config.seed = 0
  config.safety_checker = True
  config.max_safety_attempts = 10  # per image; an image flagged this often stops the run with an error
  # A jax.profiler trace of batches [profile_first_step, + profile_steps) under <workdir>/tensorboard (0: off);
  # batch 0 compiles.
  config.profile_steps = 0
  config.profile_first_step = 1
  # Classes: empty = the study's classes from <splits_dir>/info.json.
  config.wnids = ()
  # Directory with subset.jsonl / info.json of the study; empty: prepare them from `data` into
  # <workdir>/data (Boomerang reads its subset images from there).
  config.splits_dir = ""
  return config
