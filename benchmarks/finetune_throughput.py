"""Fine-tuning throughput: train steps/s of our jitted step vs the same step with diffusers' PyTorch
models, same shapes, same process.

The step (Imagic / pseudo-word + DM, the heaviest methods): VAE-encode a batch (frozen), sample the
posterior, noise it at uniform timesteps, predict the noise with the U-Net conditioned on a learned
[77, hidden] tensor per class, MSE, backward into conditioning + U-Net, AdamW update.

  # CPU, small model (runs here in ~1-2 minutes):
  python benchmarks/finetune_throughput.py --shape=small --batch_size=2 --steps=5
  # GPU, SD v1.4 shapes at 512 px, bfloat16 (JAX) vs float16 autocast (PyTorch):
  XLA_PYTHON_CLIENT_PREALLOCATE=false python benchmarks/finetune_throughput.py --shape=sd14 \
      --dtype=bfloat16 --batch_size=8 --steps=20

Random weights (throughput does not depend on their values). Prints steps/s of both and the ratio.
"""

import time

import machine_load
from absl import flags

_SHAPE = flags.DEFINE_enum("shape", "small", ["small", "sd14"], "model shapes")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
_BATCH = flags.DEFINE_integer("batch_size", 2, "global batch")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps (after 2 warm-up steps)")
_REMAT = flags.DEFINE_string("gradient_checkpointing", "", "jax.checkpoint_policies name, or empty")

SHAPES = {
  # A few-million-parameter SD look-alike that steps in seconds on a CPU.
  "small": dict(
    resolution=64,
    hidden=128,
    unet=dict(
      sample_size=8,
      block_out_channels=(64, 128),
      layers_per_block=1,
      attention_head_dim=8,
      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ),
    vae=dict(
      block_out_channels=(32, 64, 64, 64),
      layers_per_block=1,
      down_block_types=("DownEncoderBlock2D",) * 4,
      up_block_types=("UpDecoderBlock2D",) * 4,
    ),
  ),
  # Stable Diffusion v1.4's unet/config.json and vae/config.json.
  "sd14": dict(
    resolution=512,
    hidden=768,
    unet=dict(
      sample_size=64,
      block_out_channels=(320, 640, 1280, 1280),
      layers_per_block=2,
      attention_head_dim=8,
      down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    ),
    vae=dict(
      block_out_channels=(128, 256, 512, 512),
      layers_per_block=2,
      down_block_types=("DownEncoderBlock2D",) * 4,
      up_block_types=("UpDecoderBlock2D",) * 4,
    ),
  ),
}


def _time(step, steps):
  for _ in range(2):
    step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return steps / (time.perf_counter() - start)


def jax_steps_per_s(shape, batch, steps, dtype, remat):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from diffusers import FlaxAutoencoderKL, FlaxUNet2DConditionModel

  from jax_aug import sharding
  from jax_aug.diffusion.loading import StableDiffusion
  from jax_aug.finetune import objective
  from jax_aug.finetune.trainables import Trainables, frozen_params
  from jax_aug.finetune.trainer import make_loss_fn, make_optimizer, make_steps

  jdtype = jnp.dtype(dtype)
  unet = FlaxUNet2DConditionModel(cross_attention_dim=shape["hidden"], dtype=jdtype, **shape["unet"])
  vae = FlaxAutoencoderKL(latent_channels=4, sample_size=shape["resolution"], dtype=jdtype, **shape["vae"])
  unet_params = unet.init_weights(jax.random.key(0))
  vae_params = jax.tree.map(lambda x: x.astype(jdtype), vae.init_weights(jax.random.key(1)))
  sd = StableDiffusion(
    tokenizer=None,
    text_encoder=None,
    unet=unet,
    vae=vae,
    scheduler=None,
    safety_checker=None,
    feature_extractor=None,
    # No text encoder: the learned [77, hidden] conditionings stand in for its output (FT conditioning, Imagic).
    params={"vae": vae_params, "text_encoder": None, "unet": unet_params},
    checkpoint="benchmark",
    dtype=dtype,
  )
  spec = Trainables("tensor", 1, train_unet=True)  # Imagic's step: conditioning and U-Net train
  conditioning = spec.build([], tokenizer=None)
  trainable = {"conditioning": jnp.zeros((4, 77, shape["hidden"])), "unet": unet_params}

  class C(dict):
    __getattr__ = dict.__getitem__

  config = C(
    learning_rate=C(conditioning=1e-3, pseudo_words=0.0, unet=1e-5),
    optimizer=C(b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, max_grad_norm=1.0),
  )
  tx = make_optimizer(config, trainable)
  mesh = sharding.make_mesh()
  abar = jnp.asarray(objective.alphas_cumprod())
  train_step, _ = make_steps(make_loss_fn(conditioning, sd, abar, gradient_checkpointing=remat), tx, mesh)
  res = shape["resolution"]
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(
    {
      "image": rng.uniform(-1, 1, (batch, 3, res, res)).astype(np.float32),
      "index": np.arange(batch, dtype=np.int32),
      "weight": np.ones(batch, np.float32),
      "conditioning_index": (np.arange(batch) % 4).astype(np.int32),
    },
    mesh,
  )
  # The frozen tree as production builds it (the trainer's step reads it by these keys).
  state = {"t": sharding.replicate(trainable, mesh), "o": None, "f": sharding.replicate(frozen_params(spec, sd), mesh)}
  state["o"] = tx.init(state["t"])

  def step():
    state["t"], state["o"], metrics = train_step(state["t"], state["o"], state["f"], batch, jax.random.key(0))
    metrics["loss"].block_until_ready()

  return _time(step, steps)


def torch_steps_per_s(shape, batch, steps, dtype):
  import torch
  from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

  device = "cuda" if torch.cuda.is_available() else "cpu"
  unet = UNet2DConditionModel(cross_attention_dim=shape["hidden"], **shape["unet"]).to(device).train()
  vae = AutoencoderKL(latent_channels=4, sample_size=shape["resolution"], **shape["vae"]).to(device).eval()
  vae.requires_grad_(False)
  conditioning = torch.zeros(4, 77, shape["hidden"], device=device, requires_grad=True)
  optimizer = torch.optim.AdamW(
    [{"params": [conditioning], "lr": 1e-3}, {"params": unet.parameters(), "lr": 1e-5}], weight_decay=0.0
  )
  scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
  res = shape["resolution"]
  images = torch.rand(batch, 3, res, res, device=device) * 2 - 1
  index = torch.arange(batch, device=device) % 4
  # The reference recipe of diffusers' training scripts: fp16 autocast on GPU for a low-precision run.
  autocast = torch.autocast(device, dtype=torch.float16 if device == "cuda" else torch.bfloat16, enabled=dtype == "bfloat16")

  def step():
    with autocast:
      with torch.no_grad():
        latents = vae.encode(images).latent_dist.sample() * 0.18215
      noise = torch.randn_like(latents)
      t = torch.randint(0, 1000, (batch,), device=device)
      pred = unet(scheduler.add_noise(latents, noise, t), t, conditioning[index]).sample
      loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([conditioning, *unet.parameters()], 1.0)
    optimizer.step()
    if device == "cuda":
      torch.cuda.synchronize()

  return _time(step, steps), device


def main(argv):
  del argv
  shape = SHAPES[_SHAPE.value]
  import jax

  ours = jax_steps_per_s(shape, _BATCH.value, _STEPS.value, _DTYPE.value, _REMAT.value)
  theirs, device = torch_steps_per_s(shape, _BATCH.value, _STEPS.value, _DTYPE.value)
  print(f"shape={_SHAPE.value} batch={_BATCH.value} dtype={_DTYPE.value} jax devices={jax.devices()} torch device={device}")
  print(f"jax (ours):       {ours:8.3f} train steps/s  ({ours * _BATCH.value:.2f} images/s)")
  print(f"pytorch diffusers:{theirs:8.3f} train steps/s  ({theirs * _BATCH.value:.2f} images/s)")
  print(f"ratio jax/pytorch: {ours / theirs:.2f}x")


if __name__ == "__main__":
  machine_load.run(main)
