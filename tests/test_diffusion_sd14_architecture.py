"""SD v1.4's real architecture, not only tiny shapes: the full U-Net (860M parameters), VAE and CLIP ViT-L/14 text
encoder configurations with random weights, written once as a PyTorch diffusers folder (.bin) in a temp dir,
loaded through `load_sd(from_pt=True)` (float32 and bfloat16), and sampled by our engine against diffusers'
PyTorch `StableDiffusionPipeline` with the same initial latents: 64 px (8x8 latents; the architecture is
resolution-independent), 2 PNDM steps (SD v1.4's scheduler config), guidance 7.5, two prompts. The safety
checker keeps tiny width (it is not part of sampling; the paper's checker is tested in test_diffusion_safety).

Tolerances on the 0..1 image scale, max abs over all pixels:
- float32 vs PyTorch float32: 2e-3 (measured 4.6e-5; a 16-block U-Net with 768-wide attention and a
  4-level VAE could accumulate more float32 rounding than the tiny one, so the bound stays under half an
  8-bit level, 3.9e-3).
- bfloat16 vs our float32: 0.1 (measured 3.4e-2; bf16 keeps 8 mantissa bits, ~4e-3 per op, over ~50
  layers per U-Net call).
Negative control: swapping the two prompts moves the float32 images by far more than 2e-3.

Heavy: ~4 GB of float32 weights on each side. Measured on the loaded 2-core machine: 7 min 38 s wall for the
whole file, 18.5 GB peak RSS (the PT->Flax conversion alone ~6 minutes and ~13.6 GB); since the conversion reads
the U-Net's and VAE's shapes instead of running their random init (compat.py), 7 min 21 s beside another 2-core job
on the slower machine (load 3.4) and 16.5 GB peak, not yet measured alone. Slow-marked; it runs
in a subprocess of its own (the memory goes back when it ends); the PyTorch folder is built once, and the
bfloat16 model loads from the converted weights saved as a Flax folder.
"""

import gc
from pathlib import Path

import numpy as np
import pytest
import torch

from jax_aug.diffusion import engine, tiny
from jax_aug.diffusion.loading import load_sd

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # 18.5 GB peak: see tests/conftest.py

PROMPTS = ["A photo of goldfish, Carassius auratus.", "a black and white photo of the tigershark."]
RESOLUTION, STEPS = 64, 2
FLOAT32_TOLERANCE = 2e-3
BFLOAT16_TOLERANCE = 0.1


def _reference(path):
  """(PyTorch reference images, PyTorch images with the prompts swapped, latents), the folder written at `path`."""
  pipeline = tiny.build_random_sd_pt(
    path, seed=0, unet_config=tiny.SD14_UNET, vae_config=tiny.SD14_VAE, text_config=tiny.SD14_TEXT
  )
  pipeline.set_progress_bar_config(disable=True)
  latents = torch.randn((2, 4, RESOLUTION // 8, RESOLUTION // 8), generator=torch.Generator().manual_seed(0))
  run = lambda prompts, pipeline=pipeline: (
    pipeline(
      prompts,
      num_inference_steps=STEPS,
      guidance_scale=7.5,
      latents=latents,
      height=RESOLUTION,
      width=RESOLUTION,
      output_type="np",
    ).images
  )
  with torch.no_grad():
    reference, swapped = run(PROMPTS), run(PROMPTS[::-1])
  del pipeline, run  # free the PyTorch weights (the closure holds them too) before the conversion loads them again
  gc.collect()
  return reference, swapped, latents.numpy()


def _sample(model, latents):
  sampler = engine.Sampler(model, engine.SamplerSettings(num_inference_steps=STEPS, resolution=RESOLUTION))
  requests = [engine.Request("n01443537", 0, prompt=PROMPTS[0]), engine.Request("n01491361", 0, prompt=PROMPTS[1])]
  return sampler.generate(latents, sampler.conditionings(requests))


def _save_flax(model, path):
  from diffusers import FlaxStableDiffusionPipeline

  pipeline = FlaxStableDiffusionPipeline(
    vae=model.vae,
    text_encoder=model.text_encoder,
    tokenizer=model.tokenizer,
    unet=model.unet,
    scheduler=model.scheduler,
    safety_checker=model.safety_checker,
    feature_extractor=model.feature_extractor,
  )
  pipeline.save_pretrained(path, params={k: v for k, v in model.params.items() if k != "scheduler"})


def compare(workdir: str) -> dict:
  """The whole comparison (run in a process of its own by the test); returns the measured differences."""
  path = Path(workdir) / "pt"
  reference, swapped, latents = _reference(path)
  model = load_sd(path, from_pt=True)
  architecture = {
    "block_out_channels": list(model.unet.config.block_out_channels),
    "text_hidden_size": model.text_encoder.config.hidden_size,
    "text_layers": model.text_encoder.config.num_hidden_layers,
  }
  ours = _sample(model, latents)
  # bfloat16 through load_sd's Flax path (how SD v1.4's Flax weights load), from the converted weights
  # saved once: a second PT->Flax conversion would cost another ~6 minutes.
  flax_path = Path(workdir) / "flax"
  _save_flax(model, flax_path)
  del model
  gc.collect()
  ours16 = _sample(load_sd(flax_path, dtype="bfloat16"), latents)
  return {
    **architecture,
    "float32_error": float(np.abs(ours - reference).max()),
    "prompt_swap_difference": float(np.abs(reference - swapped).max()),
    "bfloat16_error": float(np.abs(ours16 - ours).max()),
  }


def test_sd14_float32_and_bfloat16_match_pytorch(run_jax, tmp_path):
  # In a process of its own: its ~18 GB peak goes back to the system when it ends, whatever the suite's
  # process holds by then.
  result = run_jax(
    f"import runpy\nemit(runpy.run_path({__file__!r})['compare']({str(tmp_path)!r}))", timeout=1800, torch=True
  )
  print(f"SD v1.4: {result}")
  assert result["block_out_channels"] == [320, 640, 1280, 1280]
  assert (result["text_hidden_size"], result["text_layers"]) == (768, 12)
  assert result["float32_error"] < FLOAT32_TOLERANCE
  assert result["prompt_swap_difference"] > 10 * FLOAT32_TOLERANCE  # negative control
  assert 1e-4 < result["bfloat16_error"] < BFLOAT16_TOLERANCE  # bf16 did run, within its bound
