"""Images/s of our sampling engine vs diffusers' PyTorch StableDiffusionPipeline, same run, same settings.

  CPU (here): python benchmarks/sampling_throughput.py --mode=cpu
  GPU:        XLA_PYTHON_CLIENT_PREALLOCATE=false python benchmarks/sampling_throughput.py --mode=gpu

cpu: the tiny SD of the tests (32 px), identical weights on both sides (PyTorch model converted to Flax),
float32. gpu: SD v1.4 shapes (U-Net 320-640-1280-1280, CLIP ViT-L/14 text tower and safety checker,
4-level VAE) with random weights (weights do not change speed), 512 px: ours in bfloat16, PyTorch in
fp16. Both: PNDM, guidance 7.5, the safety checker on every image, one untimed warm-up batch (our
compilation, PyTorch's autotuning), then `--batches` timed batches end to end.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import machine_load
from absl import flags

_MODE = flags.DEFINE_enum("mode", "cpu", ["cpu", "gpu"], "cpu: tiny SD; gpu: SD v1.4 shapes at 512 px.")
_BATCH = flags.DEFINE_integer("batch", 0, "Images per batch (0: 4 on cpu, 8 on gpu).")
_BATCHES = flags.DEFINE_integer("batches", 3, "Timed batches per side.")
_STEPS = flags.DEFINE_integer("steps", 0, "Denoising steps (0: 10 on cpu, 50 on gpu).")
_DIFFUSERS_ATTENTION = flags.DEFINE_bool(
  "diffusers_attention",
  False,
  "Also time our engine with diffusers' own Flax attention (compat's cuDNN flash-attention path undone in this"
  " process, after the other timings): what that path is worth, measured in the same process.",
)

PROMPTS = (
  "A photo of goldfish, Carassius auratus.",
  "a photo of many tigershark.",
  "A photo of desktopcomputer.",
  "a sketch of a papillon.",
)


def sd14_pair(workdir: Path):
  """(PyTorch fp16 pipeline on CUDA, our bfloat16 model), each with its own random weights."""
  import torch
  from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
  from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
  from transformers import CLIPTextConfig, CLIPTextModel

  from jax_aug.diffusion import loading, tiny

  pipeline = StableDiffusionPipeline(
    vae=AutoencoderKL(**tiny.SD14_VAE),
    text_encoder=CLIPTextModel(CLIPTextConfig(**tiny.SD14_TEXT)),
    tokenizer=loading.load_clip_tokenizer(),
    unet=UNet2DConditionModel(**tiny.SD14_UNET),
    scheduler=PNDMScheduler(**tiny.SD14_SCHEDULER_CONFIG),
    safety_checker=StableDiffusionSafetyChecker(tiny.safety_clip_config(tiny.SD14_TEXT, tiny.SD14_SAFETY_VISION)),
    feature_extractor=tiny.feature_extractor(),
  ).to("cuda", torch.float16)
  path = tiny.build_random_sd(
    workdir / "sd14",
    unet_config=tiny.SD14_UNET,
    vae_config=tiny.SD14_VAE,
    text_config=tiny.SD14_TEXT,
    vision_config=tiny.SD14_SAFETY_VISION,
  )
  return pipeline, loading.load_sd(path, dtype="bfloat16")


def tiny_pair(workdir: Path):
  """(PyTorch pipeline, our model) with identical tiny weights."""
  from jax_aug.diffusion.loading import load_sd
  from jax_aug.diffusion.tiny import build_tiny_sd_pt

  pipeline = build_tiny_sd_pt(workdir / "tiny", seed=0)
  return pipeline, load_sd(workdir / "tiny", from_pt=True)


def images_per_second(fn, batch: int, batches: int, sync=lambda: None) -> float:
  fn(-1)  # warm-up
  sync()
  start = time.perf_counter()
  for b in range(batches):
    fn(b)
  sync()
  return batch * batches / (time.perf_counter() - start)


def main(argv):
  del argv
  import torch

  from jax_aug.diffusion import engine
  from jax_aug.diffusion.safety import make_safety_fn

  gpu = _MODE.value == "gpu"
  batch = _BATCH.value or (8 if gpu else 4)
  steps = _STEPS.value or (50 if gpu else 10)
  with tempfile.TemporaryDirectory() as tmp:
    pipeline, model = (sd14_pair if gpu else tiny_pair)(Path(tmp))
  pipeline.set_progress_bar_config(disable=True)
  prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
  requests = [engine.Request("n01443537", i, prompt=p) for i, p in enumerate(prompts)]
  settings = engine.SamplerSettings(num_inference_steps=steps)
  sampler = engine.get_sampler(model, settings)
  safety = make_safety_fn(model)

  def ours(b, sampler=sampler):
    safety(engine.generate_batch(sampler, requests, [b + 1] * batch, seed=0))

  def pytorch(b):
    generator = torch.Generator("cuda" if gpu else "cpu").manual_seed(b + 1)
    pipeline(
      prompts,
      num_inference_steps=steps,
      guidance_scale=7.5,
      height=model.resolution,
      width=model.resolution,
      generator=generator,
      output_type="np",
    )

  sync = torch.cuda.synchronize if gpu else (lambda: None)
  ours_rate = images_per_second(ours, batch, _BATCHES.value)
  pytorch_rate = images_per_second(pytorch, batch, _BATCHES.value, sync)
  print(
    f"mode={_MODE.value} resolution={model.resolution} steps={steps} batch={batch} guidance=7.5"
    f" timed_batches={_BATCHES.value} dtype={model.dtype} compilations={sampler.compilations()}"
  )
  print(f"  ours (JAX/Flax)     {ours_rate:9.3f} images/s")
  print(f"  diffusers PyTorch   {pytorch_rate:9.3f} images/s")
  print(f"  ratio ours/PyTorch  {ours_rate / pytorch_rate:9.2f}x")
  if _DIFFUSERS_ATTENTION.value:
    from diffusers.models import attention_flax
    from flax import linen as nn

    from jax_aug.diffusion import compat

    attention_flax.FlaxAttention.__call__ = nn.module.wrap_method_once(compat._DIFFUSERS_ATTENTION_CALL)
    plain_sampler = engine.Sampler(model, settings)  # traced again, now through diffusers' attention
    plain_rate = images_per_second(lambda b: ours(b, plain_sampler), batch, _BATCHES.value)
    print(f"  ours, diffusers' attention {plain_rate:9.3f} images/s ({plain_rate / pytorch_rate:.2f}x PyTorch)")


if __name__ == "__main__":
  machine_load.run(main)
