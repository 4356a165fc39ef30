"""Our engine vs diffusers' PyTorch pipelines with identical tiny weights (PyTorch model converted to
Flax), identical initial latents and scheduler (PNDM as SD v1.4, 10 steps, guidance 7.5).

Tolerance: 1e-3 max abs on the 0..1 image scale (measured: ~1.5e-5 text prompt, ~1e-5 img2img; the
float32 PT->Flax conversion alone gives ~1e-4 on U-Net outputs). Each test also shows the tolerance is
tight: a different prompt or strength moves the images by more than 30x the tolerance.
"""

import numpy as np
import pytest

TOLERANCE = 1e-3
STEPS = 10
PROMPTS = ["A photo of goldfish, Carassius auratus.", "a black and white photo of the tigershark."]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  from jax_aug.diffusion.loading import load_sd
  from jax_aug.diffusion.tiny import build_tiny_sd_pt
  path = tmp_path_factory.mktemp("pt") / "tiny"
  pipeline = build_tiny_sd_pt(path, seed=0)
  pipeline.set_progress_bar_config(disable=True)
  return pipeline, load_sd(path, from_pt=True)


def _latents(seed, shape):
  import torch
  return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
def test_text_prompt_with_guidance_matches_pytorch(pair):
  from jax_aug.diffusion import engine
  pipeline, model = pair
  latents = _latents(0, (2, 4, 16, 16))
  reference = pipeline(PROMPTS, num_inference_steps=STEPS, guidance_scale=7.5, latents=latents, height=32,
                       width=32, output_type="np").images
  sampler = engine.Sampler(model, engine.SamplerSettings(num_inference_steps=STEPS))
  requests = [engine.Request("n01443537", 0, prompt=PROMPTS[0]), engine.Request("n01491361", 0, prompt=PROMPTS[1])]
  ours = sampler.generate(latents.numpy(), sampler.conditionings(requests))
  assert np.abs(ours - reference).max() < TOLERANCE
  swapped = sampler.generate(latents.numpy(), sampler.conditionings(requests[::-1]))
  assert np.abs(swapped - reference).max() > 30 * TOLERANCE


@pytest.mark.slow
def test_precomputed_prompt_embeddings_match_pytorch(pair):
  import torch
  from jax_aug.diffusion import engine
  pipeline, model = pair
  rng = np.random.default_rng(0)
  embeds = rng.normal(size=(2, 77, 32)).astype(np.float32)
  negative = rng.normal(size=(2, 77, 32)).astype(np.float32)
  latents = _latents(1, (2, 4, 16, 16))
  reference = pipeline(prompt_embeds=torch.tensor(embeds), negative_prompt_embeds=torch.tensor(negative),
                       num_inference_steps=STEPS, guidance_scale=7.5, latents=latents, height=32, width=32,
                       output_type="np").images
  sampler = engine.Sampler(model, engine.SamplerSettings(num_inference_steps=STEPS))
  requests = [engine.Request("n01443537", i, encoder_hidden_states=embeds[i]) for i in range(2)]
  ours = sampler.generate(latents.numpy(), sampler.conditionings(requests), uncond=negative)
  assert np.abs(ours - reference).max() < TOLERANCE


@pytest.mark.slow
def test_boomerang_matches_pytorch_img2img(pair):
  import torch
  from diffusers import StableDiffusionImg2ImgPipeline
  from jax_aug.diffusion import engine
  pipeline, model = pair
  img2img = StableDiffusionImg2ImgPipeline(**pipeline.components)
  img2img.set_progress_bar_config(disable=True)
  images = np.random.default_rng(2).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
  # Our Boomerang encodes with the posterior mean; hand PyTorch the same latents (4-channel input is
  # taken as latents by the img2img pipeline), encoded by PyTorch's own VAE.
  with torch.no_grad():
    init_latents = pipeline.vae.encode(torch.tensor(images)).latent_dist.mean * pipeline.vae.config.scaling_factor
  results = {}
  for strength in (0.5, 0.8):
    reference = img2img(["", ""], image=init_latents, strength=strength, num_inference_steps=STEPS,
                        guidance_scale=7.5, generator=torch.Generator().manual_seed(3), output_type="np").images
    # img2img draws its noise as the first randn of that generator.
    noise = _latents(3, (2, 4, 16, 16)).numpy()
    sampler = engine.Sampler(model, engine.SamplerSettings(num_inference_steps=STEPS, boomerang_strength=strength))
    ours = sampler.generate(noise, sampler.encode_prompts(["", ""]), init_images=images)
    assert np.abs(ours - reference).max() < TOLERANCE, strength
    results[strength] = ours
  assert np.abs(results[0.5] - results[0.8]).max() > 30 * TOLERANCE
