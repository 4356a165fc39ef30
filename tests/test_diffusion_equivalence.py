"""Our engine vs diffusers' PyTorch pipelines with identical tiny weights (PyTorch model converted to
Flax), identical initial latents and scheduler (PNDM as SD v1.4, 10 steps, guidance 7.5).

Img2img runs as diffusers runs it (the pipeline encodes the images and draws its own posterior sample;
our engine is handed the same draws), with and without prompts and guidance. Every scheduler the engine
offers (PNDM, DDIM; LMS and DPM-Solver are not offered, engine.SCHEDULERS says why) is compared with its
PyTorch twin from the same scheduler config (tolerance 2e-4 there, so a one-timestep shift is 20x outside).

Tolerance: 1e-3 max abs on the 0..1 image scale (measured: ~1.5e-5 text prompt, ~1e-5 img2img; the
float32 PT->Flax conversion alone gives ~1e-4 on U-Net outputs). Each test also shows the tolerance is
tight: a swapped prompt, another strength or the posterior mean instead of a sample move the images by
more than 10x the tolerance.
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
  reference = pipeline(
    PROMPTS, num_inference_steps=STEPS, guidance_scale=7.5, latents=latents, height=32, width=32, output_type="np"
  ).images
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
  reference = pipeline(
    prompt_embeds=torch.tensor(embeds),
    negative_prompt_embeds=torch.tensor(negative),
    num_inference_steps=STEPS,
    guidance_scale=7.5,
    latents=latents,
    height=32,
    width=32,
    output_type="np",
  ).images
  sampler = engine.Sampler(model, engine.SamplerSettings(num_inference_steps=STEPS))
  requests = [engine.Request("n01443537", i, encoder_hidden_states=embeds[i]) for i in range(2)]
  ours = sampler.generate(latents.numpy(), sampler.conditionings(requests), uncond=negative)
  assert np.abs(ours - reference).max() < TOLERANCE


def _img2img(pipeline):
  from diffusers import StableDiffusionImg2ImgPipeline

  img2img = StableDiffusionImg2ImgPipeline(**pipeline.components)
  img2img.set_progress_bar_config(disable=True)
  return img2img


@pytest.mark.slow
@pytest.mark.parametrize("strength,prompts,guidance", [(0.5, ["", ""], 7.5), (0.8, PROMPTS, 7.5), (0.5, PROMPTS, 1.0)])
def test_boomerang_matches_pytorch_img2img_as_it_runs(pair, strength, prompts, guidance):
  """The img2img pipeline given the images themselves: it encodes them, draws its own posterior sample and
  noise from the generator (in that order); our engine gets the same two draws. Guidance 1.0 is diffusers'
  branch without classifier-free guidance; ours computes uncond + 1 * (cond - uncond)."""
  import torch

  from jax_aug.diffusion import engine

  pipeline, model = pair
  images = np.random.default_rng(2).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
  # A tensor in [0, 1], which the pipeline's image processor maps to [-1, 1] (= our images).
  reference = _img2img(pipeline)(
    prompts,
    image=torch.tensor((images + 1) / 2),
    strength=strength,
    num_inference_steps=STEPS,
    guidance_scale=guidance,
    generator=torch.Generator().manual_seed(3),
    output_type="np",
  ).images
  generator = torch.Generator().manual_seed(3)
  posterior_noise = torch.randn((2, 4, 16, 16), generator=generator).numpy()
  noise = torch.randn((2, 4, 16, 16), generator=generator).numpy()
  settings = engine.SamplerSettings(num_inference_steps=STEPS, boomerang_strength=strength, guidance_scale=guidance)
  sampler = engine.Sampler(model, settings)
  ours = sampler.generate(noise, sampler.encode_prompts(prompts), init_images=images, posterior_noise=posterior_noise)
  assert np.abs(ours - reference).max() < TOLERANCE
  # Negative control: the posterior mean (the reference's draw ignored) is outside the tolerance.
  mean_only = sampler.generate(
    noise, sampler.encode_prompts(prompts), init_images=images, posterior_noise=np.zeros_like(posterior_noise)
  )
  assert np.abs(mean_only - reference).max() > 10 * TOLERANCE


@pytest.mark.slow
def test_boomerang_strength_changes_the_image(pair):
  from jax_aug.diffusion import engine

  _, model = pair
  rng = np.random.default_rng(2)
  images = rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
  noise, posterior_noise = rng.normal(size=(2, 2, 4, 16, 16)).astype(np.float32)
  results = []
  for strength in (0.5, 0.8):
    sampler = engine.Sampler(model, engine.SamplerSettings(num_inference_steps=STEPS, boomerang_strength=strength))
    results.append(
      sampler.generate(noise, sampler.encode_prompts(["", ""]), init_images=images, posterior_noise=posterior_noise)
    )
  assert np.abs(results[0] - results[1]).max() > 30 * TOLERANCE


SCHEDULERS = {"pndm": "PNDMScheduler", "ddim": "DDIMScheduler"}
SCHEDULER_TOLERANCE = 2e-4


def test_every_offered_scheduler_has_a_reference():
  from jax_aug.diffusion import engine

  assert set(SCHEDULERS) == set(engine.SCHEDULERS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_matches_pytorch(pair, name):
  """Each scheduler the engine offers, configured from SD v1.4's scheduler config (steps_offset=1,
  set_alpha_to_one=False, scaled_linear betas, and for DDIM clip_sample=True, which the PyTorch pipeline
  turns off when it is built) on both sides. Negative control: the PyTorch schedule shifted by one training
  timestep (what steps_offset=0 would give) differs by more than 10x the tolerance."""
  import diffusers

  from jax_aug.diffusion import engine

  pipeline, model = pair
  assert pipeline.scheduler.config.steps_offset == 1
  latents = _latents(4, (2, 4, 16, 16))
  sampler = engine.Sampler(model, engine.SamplerSettings(num_inference_steps=STEPS, scheduler=name))
  ours = sampler.generate(latents.numpy(), sampler.encode_prompts(PROMPTS))

  def reference(shift=0):
    scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(pipeline.scheduler.config)
    if shift:
      set_timesteps = scheduler.set_timesteps

      def shifted(*args, **kwargs):
        set_timesteps(*args, **kwargs)
        scheduler.timesteps = scheduler.timesteps - shift

      scheduler.set_timesteps = shifted
    run = diffusers.StableDiffusionPipeline(**{**pipeline.components, "scheduler": scheduler})
    run.set_progress_bar_config(disable=True)
    return run(
      PROMPTS, num_inference_steps=STEPS, guidance_scale=7.5, latents=latents.clone(), height=32, width=32, output_type="np"
    ).images

  error = np.abs(ours - reference()).max()
  print(f"{name}: max abs difference {error:.2e}")
  # Tighter than TOLERANCE (measured ~2.5e-5 for both), so that a one-step shift (~4e-3) is 20x outside.
  assert error < SCHEDULER_TOLERANCE
  assert np.abs(ours - reference(shift=1)).max() > 10 * SCHEDULER_TOLERANCE
