"""THE sampling engine: Stable Diffusion samples for an augmentation set, over all local devices.

A run is a list of `Request`s (class, image index, conditioning). Each image's initial noise comes from
`item_key(seed, class, image index, attempt)`, so any image can be regenerated alone and a resumed run,
or a run on another number of devices, gives the same images. Requests are cut into fixed global batches
(split over the local devices with a NamedSharding from jax_aug.sharding); hosts take disjoint shares
(`host_slice`). The denoising loop is one jitted function per (batch, resolution, steps) shape, reused
for every class, prompt and conditioning tensor: those are inputs, never constants.

The safety checker runs on every image; a flagged image is replaced by a new sample of the same request
(next `attempt`) and the row records how many were discarded. Images are written through
`AugmentationSetWriter` (image file atomically, then its manifest row), so a restart skips finished
images and never lists a half-written file.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from jax_aug import metrics as metrics_lib
from jax_aug import sharding
from jax_aug.data.augmentation_set import AugmentationSetWriter
from jax_aug.data.augmentation_set import item_key as augmentation_item_key
from jax_aug.data.classes import imagenet
from jax_aug.data.transforms import vae_image
from jax_aug.diffusion import boomerang, conditioning
from jax_aug.diffusion.loading import StableDiffusion
from jax_aug.diffusion.safety import make_safety_fn
from jax_aug.finetune import objective

METRICS_FILE = "metrics.jsonl"
# Only schedulers whose Flax implementation matches diffusers' PyTorch pipeline (tests/test_diffusion_equivalence.py).
# Not offered, measured on the tiny SD: diffusers 0.39's FlaxLMSDiscreteScheduler indexes its sigmas by the
# timestep value (not its position) and does not trace inside a jitted loop; FlaxDPMSolverMultistepScheduler
# lacks PyTorch's `final_sigmas_type="zero"` last step (images differ by 0.05 on the 0..1 scale).
SCHEDULERS = {
  "pndm": "FlaxPNDMScheduler",
  "ddim": "FlaxDDIMScheduler",
}


@dataclasses.dataclass(frozen=True)
class Request:
  """One image to generate. Exactly one conditioning: `prompt` (may contain pseudo-word tokens of the
  model's tokenizer) or `encoder_hidden_states` [77, hidden] (a learned conditioning tensor).
  `init_image` (a subset image path) makes it a Boomerang request. `provenance` is copied into its row.
  `class_index`: the class's index in its dataset (jax_aug.data.classes); None: the ImageNet class `wnid`."""

  wnid: str
  image_index: int
  prompt: str | None = None
  encoder_hidden_states: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
  init_image: str | None = None
  provenance: Mapping = dataclasses.field(default_factory=dict, compare=False)
  class_index: int | None = None

  @property
  def key(self) -> str:
    return augmentation_item_key(self.wnid, self.image_index)

  @property
  def label(self) -> int:
    """The class's dataset index (ILSVRC2012's on ImageNet): fixed per class, so keys never depend on which
    classes a study keeps."""
    return imagenet()[self.wnid].index if self.class_index is None else self.class_index


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  num_inference_steps: int = 50
  guidance_scale: float = 7.5
  scheduler: str = "pndm"
  resolution: int = 0  # 0: the model's native size (512 for SD v1.4)
  boomerang_strength: float = 0.0  # > 0: img2img from init images (Boomerang)


def item_key(seed, label, image_index, attempt) -> jax.Array:
  """The PRNG key of one image: fold_in(fold_in(fold_in(key(seed), label), index), attempt)."""
  key = jax.random.key(seed)
  for value in (label, image_index, attempt):
    key = jax.random.fold_in(key, value)
  return key


_NOISE_FNS: dict[tuple, Callable] = {}
# Boomerang's VAE posterior draw of an item: fold_in(item key, 1), a stream apart from its initial latents.
POSTERIOR_STREAM = 1


def initial_noise(
  seed: int,
  labels: Sequence[int],
  indices: Sequence[int],
  attempts: Sequence[int],
  latent_shape: tuple[int, int, int],
  *,
  stream: int | None = None,
) -> np.ndarray:
  """Standard normal latents [B, C, h, w]; row i depends only on (seed, labels[i], indices[i], attempts[i])
  (and `stream`, folded into the item key, for a second independent draw of the same item)."""
  if (latent_shape, stream) not in _NOISE_FNS:

    def draw(seed, label, index, attempt):
      key = item_key(seed, label, index, attempt)
      return jax.random.normal(key if stream is None else jax.random.fold_in(key, stream), latent_shape, jnp.float32)

    _NOISE_FNS[latent_shape, stream] = jax.jit(jax.vmap(draw, in_axes=(None, 0, 0, 0)))
  as_u32 = lambda x: jnp.asarray(np.asarray(x, dtype=np.uint32))
  return np.asarray(_NOISE_FNS[latent_shape, stream](as_u32(seed), as_u32(labels), as_u32(indices), as_u32(attempts)))


def make_scheduler(model: StableDiffusion, name: str):
  """The named Flax scheduler, configured from the checkpoint's scheduler config (betas, offsets)."""
  import diffusers

  if name not in SCHEDULERS:
    raise ValueError(f"unknown scheduler {name!r}: expected one of {sorted(SCHEDULERS)}")
  # diffusers' StableDiffusionPipeline corrects two fields of SD v1.x's old scheduler configs when it is built
  # (steps_offset -> 1; clip_sample -> False, which DDIM would otherwise apply to its x0 prediction). Private
  # keys go: from_config would otherwise reset fields listed in `_use_default_values` to their defaults.
  config = {k: v for k, v in model.scheduler.config.items() if not k.startswith("_")}
  config["steps_offset"] = 1
  scheduler_class = getattr(diffusers, SCHEDULERS[name])
  scheduler = scheduler_class.from_config(config)
  if scheduler.config.get("clip_sample") is True:
    scheduler = scheduler_class.from_config({**config, "clip_sample": False})
  return scheduler, scheduler.create_state()


class Sampler:
  """The compiled pieces for one model and one setting: text encoding, denoise + decode, safety check.

  `generate` is a pure function of its inputs (noise, conditionings, init images); the per-item keys and
  the files live in `sample_augmentation_set`. Tests feed it the PyTorch pipeline's latents directly.
  """

  def __init__(self, model: StableDiffusion, settings: SamplerSettings, mesh=None):
    self.model = model
    self.settings = settings
    self.mesh = mesh if mesh is not None else sharding.make_mesh(jax.local_devices())
    self.resolution = settings.resolution or model.resolution
    if self.resolution % model.vae_scale_factor:
      raise ValueError(
        f"resolution {self.resolution} is not a multiple of the VAE's downsampling factor {model.vae_scale_factor}"
      )
    latent = self.resolution // model.vae_scale_factor
    self.latent_shape = (model.unet.config.in_channels, latent, latent)
    self.hidden = model.text_encoder.config.hidden_size
    self.max_length = model.tokenizer.model_max_length
    if settings.num_inference_steps < 1:
      raise ValueError(f"num_inference_steps must be >= 1, got {settings.num_inference_steps}")
    self.scheduler, self.scheduler_state = make_scheduler(model, settings.scheduler)
    self.start = (
      boomerang.start_step(settings.num_inference_steps, settings.boomerang_strength) if settings.boomerang_strength else 0
    )
    self._encode_text = conditioning.make_text_encoder_fn(model.text_encoder)
    self._denoise = jax.jit(
      self._denoise_and_decode, static_argnames=("img2img",), out_shardings=sharding.data_sharding(self.mesh)
    )
    self._placed = None

  # --- conditioning ---------------------------------------------------------------------------------

  def encode_prompts(self, prompts: Sequence[str], params=None) -> np.ndarray:
    ids = conditioning.tokenize(self.model.tokenizer, prompts)
    params = self.model.params["text_encoder"] if params is None else params
    return np.asarray(self._encode_text(params, jnp.asarray(ids)), dtype=np.float32)

  def unconditional(self) -> np.ndarray:
    """Encoding of the empty prompt: the unconditional branch of classifier-free guidance. Not cached:
    a fine-tuned text encoder (Imagic, pseudo-word + DM) changes it."""
    return self.encode_prompts([""])[0]

  def conditionings(self, requests: Sequence[Request]) -> np.ndarray:
    """[B, 77, hidden] for a batch of requests, prompts encoded in one call of fixed shape [B, 77]."""
    prompts = ["" if r.prompt is None else r.prompt for r in requests]
    cond = np.array(self.encode_prompts(prompts))  # writable copy: rows get replaced below
    for i, r in enumerate(requests):
      if (r.prompt is None) == (r.encoder_hidden_states is None):
        raise ValueError(f"request {r.key}: give exactly one of prompt and encoder_hidden_states")
      if r.encoder_hidden_states is not None:
        cond[i] = conditioning.check_hidden_states(
          r.encoder_hidden_states, length=self.max_length, hidden=self.hidden, what=f"request {r.key}"
        )
    return cond

  # --- denoising --------------------------------------------------------------------------------------

  def _denoise_and_decode(self, params, noise, cond, uncond, guidance_scale, init_images, posterior_noise, *, img2img):
    model, scheduler = self.model, self.scheduler
    dtype = model.unet.dtype
    state = scheduler.set_timesteps(params["scheduler"], self.settings.num_inference_steps, noise.shape)
    timesteps = jnp.asarray(state.timesteps, jnp.int32)
    if img2img:
      # One posterior sample per image (as diffusers' img2img pipeline draws it), noised to the start step's
      # level. Flax's VAE keeps its moments NHWC; the posterior noise comes NCHW, as the U-Net's latents.
      init_latents = objective.encode_latents(
        model.vae,
        params["vae"],
        init_images.astype(dtype),
        posterior_noise.transpose(0, 2, 3, 1),
        model.vae.config.scaling_factor,
      ).astype(jnp.float32)
      t0 = jnp.broadcast_to(timesteps[self.start], (noise.shape[0],))
      latents = scheduler.add_noise(state, init_latents, noise, t0)
    else:
      latents = noise * state.init_noise_sigma
    context = jnp.concatenate([uncond, cond]).astype(dtype)
    step = functools.partial(self._denoise_step, params, context, guidance_scale, timesteps)
    # Every entry of the schedule, as diffusers' PyTorch pipelines do (PNDM has steps + 1 entries; the
    # Flax pipeline stops one short).
    latents, _ = jax.lax.fori_loop(self.start, timesteps.shape[0], step, (latents, state))
    latents = latents / model.vae.config.scaling_factor
    image = model.vae.apply({"params": params["vae"]}, latents.astype(dtype), method=model.vae.decode).sample
    image = jnp.clip(image.astype(jnp.float32) / 2 + 0.5, 0, 1)
    return image.transpose(0, 2, 3, 1)

  def _denoise_step(self, params, context, guidance_scale, timesteps, i, carry):
    """One iteration of the denoising loop: classifier-free guided U-Net call + scheduler step. A method of
    its own so that the plan (jax_aug/plan) can compile it alone: XLA counts a loop body once."""
    model, scheduler = self.model, self.scheduler
    latents, state = carry
    t = timesteps[i]
    model_input = scheduler.scale_model_input(state, jnp.concatenate([latents] * 2), t)
    eps = model.unet.apply(
      {"params": params["unet"]}, model_input.astype(model.unet.dtype), jnp.broadcast_to(t, (model_input.shape[0],)), context
    ).sample
    eps_uncond, eps_cond = jnp.split(eps.astype(jnp.float32), 2)
    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    return scheduler.step(state, eps, t, latents).to_tuple()

  def loop_trip_count(self) -> int:
    """Iterations of the denoising loop per call: the schedule's entries from the (Boomerang) start step."""
    state = jax.eval_shape(
      lambda s: self.scheduler.set_timesteps(s, self.settings.num_inference_steps, (1,) + self.latent_shape),
      self.scheduler_state,
    )
    return state.timesteps.shape[0] - self.start

  def generate(
    self,
    noise: np.ndarray,
    cond: np.ndarray,
    uncond: np.ndarray | None = None,
    init_images: np.ndarray | None = None,
    posterior_noise: np.ndarray | None = None,
    params=None,
  ) -> np.ndarray:
    """Images in [0, 1], float32 [B, H, W, 3], from latents noise [B, 4, h, w] and conditionings
    [B, 77, hidden]; for Boomerang `init_images` [B, 3, H, W] in [-1, 1] and the standard normal draw of
    their VAE posterior samples `posterior_noise` [B, 4, h, w]. B must split evenly over the mesh's devices."""
    if (init_images is not None) != bool(self.settings.boomerang_strength):
      raise ValueError("init images are given exactly when boomerang_strength > 0")
    if (init_images is not None) != (posterior_noise is not None):
      raise ValueError("posterior_noise is given exactly when init images are")
    batch = noise.shape[0]
    uncond = self.unconditional() if uncond is None else uncond
    uncond = np.broadcast_to(uncond, cond.shape)
    params = self._replicated_params() if params is None else sharding.replicate(params, self.mesh)
    data = sharding.data_sharding(self.mesh)
    put = lambda x: jax.device_put(np.asarray(x, np.float32), data)
    img2img = init_images is not None
    init = put(init_images) if img2img else put(np.zeros((batch, 1, 1, 1)))
    posterior = put(posterior_noise) if img2img else put(np.zeros((batch, 1, 1, 1)))
    images = self._denoise(
      params, put(noise), put(cond), put(uncond), jnp.float32(self.settings.guidance_scale), init, posterior, img2img=img2img
    )
    return np.asarray(images)

  def _replicated_params(self):
    """The model's parameters placed on every device once per parameter set (not once per batch: at
    SD v1.4 size that would copy 2 GB per batch)."""
    if self._placed is None or self._placed[0] is not self.model.params:
      placed = sharding.replicate({**self.model.params, "scheduler": self.scheduler_state}, self.mesh)
      self._placed = (self.model.params, placed)
    return self._placed[1]

  def compilations(self) -> int:
    """How many shapes the denoising loop was compiled for: the batch's, and one per replacement round size."""
    return self._denoise._cache_size()


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[0, 1] floats to uint8 as diffusers' numpy_to_pil does (round half to even after * 255)."""
  return (images * 255).round().astype(np.uint8)


def _batches(items: Sequence, size: int) -> list[list]:
  return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _pad(items: list, size: int) -> list:
  """Pads a short batch with copies of its last item (their images are discarded), to a compiled shape."""
  return items + [items[-1]] * (size - len(items))


def replacement_batch_size(flagged: int, batch_size: int, devices: int) -> int:
  """The padded size of a replacement round for `flagged` requests: the smallest power-of-two multiple of the
  devices that holds them, at most `batch_size`. Rerunning the whole batch for its few flagged rows made the
  replacement rounds most of the work where the checker flags often (the mini world's fine-tuned sets: 30-41%
  of attempts, every round a full batch of 64); powers of two bound the shapes compiled to log2 of the batch."""
  size = devices
  while size < flagged:
    size *= 2
  return min(size, batch_size)


def check_requests(requests: Sequence[Request]) -> None:
  if not requests:
    raise ValueError(
      "zero images requested: the request list is empty (check images_per_class and the classes of the config)"
    )
  seen = set()
  for r in requests:
    if r.key in seen:
      raise ValueError(f"request {r.key} appears twice: (class, image index) must be unique")
    seen.add(r.key)


def _check_image_reader(read_image) -> None:
  if read_image is None:
    raise ValueError(
      "Boomerang (settings.boomerang_strength > 0) starts from subset images, so it needs"
      " read_image= (a path -> PIL image reader, e.g. jax_aug.data.sources.ImageReader()); none"
      " was given"
    )


def generate_batch(
  sampler: Sampler,
  requests: Sequence[Request],
  attempts: Sequence[int],
  *,
  seed: int,
  read_image: Callable[[str], Image.Image] | None = None,
) -> np.ndarray:
  """uint8 images [B, H, W, 3] of a (padded) batch of requests at the given attempts."""
  keys = ([r.label for r in requests], [r.image_index for r in requests], attempts)
  noise = initial_noise(seed, *keys, sampler.latent_shape)
  init = posterior = None
  if sampler.settings.boomerang_strength:
    missing = [r.key for r in requests if not r.init_image]
    if missing:
      raise ValueError(f"Boomerang requests {missing[:3]} have no init_image")
    _check_image_reader(read_image)
    init = np.stack([vae_image(read_image(r.init_image), sampler.resolution) for r in requests])
    posterior = initial_noise(seed, *keys, sampler.latent_shape, stream=POSTERIOR_STREAM)
  return to_uint8(sampler.generate(noise, sampler.conditionings(requests), init_images=init, posterior_noise=posterior))


def sample_requests(
  model: StableDiffusion,
  requests: Sequence[Request],
  out_dir: str | os.PathLike,
  *,
  method: str,
  settings: SamplerSettings,
  seed: int,
  batch_size: int,
  safety_fn: Callable[[np.ndarray], np.ndarray] | None = None,
  max_attempts: int = 10,
  read_image: Callable[[str], Image.Image] | None = None,
  mesh=None,
  profile_first_batch: int = 1,
  profile_batches: int = 0,
) -> Path:
  """Generates every request not yet in `out_dir`'s augmentation set; returns `out_dir`.

  `safety_fn(uint8 [B, H, W, 3]) -> bool [B]` flags images to replace (default: the model's safety
  checker; pass `lambda x: np.zeros(len(x), bool)` only where no checker exists). Each host takes every
  process_count-th batch and writes its own manifest shard. Each finished batch adds a row to metrics.jsonl
  (images written, safety replacements, img/s) and the same numbers to `<out_dir>/tensorboard` at step = the
  batch's number (jax_aug.metrics; a NaN/inf stops the run). `profile_batches` > 0: a jax.profiler trace of
  the generation of batches [profile_first_batch, + profile_batches) under `<out_dir>/tensorboard/plugins/profile`.
  """
  check_requests(requests)
  if settings.boomerang_strength:
    _check_image_reader(read_image)
  out_dir = Path(out_dir)
  sampler = get_sampler(model, settings, mesh)
  if batch_size < 1 or batch_size % sampler.mesh.size:
    raise ValueError(f"batch_size {batch_size} must be a positive multiple of the {sampler.mesh.size} local devices")
  if safety_fn is None:
    safety_fn = make_safety_fn(model)
  shard = jax.process_index() if jax.process_count() > 1 else None
  writer = AugmentationSetWriter(out_dir, method, shard=shard)
  events = out_dir / metrics_lib.TENSORBOARD_DIR
  metrics = (
    metrics_lib.MetricsWriter(out_dir / METRICS_FILE, events)
    if shard is None
    else metrics_lib.MetricsWriter(out_dir / f"metrics-{shard:05d}.jsonl", events / f"host-{shard:05d}")
  )
  profiler = metrics_lib.StepProfiler(metrics.logdir, profile_first_batch, profile_batches, name="sample")
  batches = sharding.host_slice(_batches(list(requests), batch_size))
  todo = sum(not writer.has(r.key) for b in batches for r in b)
  progress = tqdm(total=todo, desc=f"sampling {method}", unit="img")
  base = {
    "method": method,
    "seed": seed,
    "checkpoint": model.checkpoint,
    "guidance_scale": settings.guidance_scale,
    "num_inference_steps": settings.num_inference_steps,
    "scheduler": settings.scheduler,
  }
  if settings.boomerang_strength:
    base["boomerang_strength"] = settings.boomerang_strength
  for number, batch in enumerate(batches):
    pending = [r for r in batch if not writer.has(r.key)]
    if not pending:
      continue
    started = time.perf_counter()
    # The whole original batch is regenerated even when a crash left part of it written: the same batch
    # composition gives bit-identical images for the rest.
    # Replacement rounds run at the smallest compiled shape that holds their requests: an image depends on its
    # batch's shape only at the last bit of float rounding, and every shape here follows from the flags, so a
    # resumed batch repeats its rounds exactly.
    current, attempts, written, flagged_total = batch, [0] * len(batch), 0, 0
    rejections = {r.key: 0 for r in pending}
    size = batch_size
    while current:
      with profiler.step(number):  # generate_batch returns host arrays: the device work is done inside
        images = generate_batch(sampler, _pad(current, size), _pad(attempts, size), seed=seed, read_image=read_image)[
          : len(current)
        ]
      flags = np.asarray(safety_fn(images), dtype=bool)
      retry, retry_attempts = [], []
      for request, attempt, image, flagged in zip(current, attempts, images, flags):
        if request.key not in rejections or writer.has(request.key):
          continue
        if flagged:
          flagged_total += 1
          rejections[request.key] += 1
          if attempt + 1 >= max_attempts:
            raise RuntimeError(f"{request.key}: the safety checker flagged all {max_attempts} attempts")
          retry.append(request)
          retry_attempts.append(attempt + 1)
          continue
        record = {
          **base,
          **dict(request.provenance),
          "wnid": request.wnid,
          "key": request.key,
          "image_index": request.image_index,
          "attempt": attempt,
          "safety_rejections": rejections[request.key],
        }
        if request.prompt is not None:
          record["prompt"] = request.prompt
        if request.init_image:
          record["init_image"] = request.init_image
        writer.add(image, record)
        written += 1
        progress.update(1)
      current, attempts = retry, retry_attempts
      size = replacement_batch_size(len(current), batch_size, sampler.mesh.size)
    seconds = time.perf_counter() - started
    metrics.write_row(
      {
        "batch": number,
        "images": written,
        "flagged": flagged_total,
        "seconds": seconds,
        "images_per_second": written / seconds,
        "time": time.time(),
      },
      step=number,
    )
  profiler.close()
  metrics.close()
  progress.close()
  return out_dir


_SAMPLERS: dict[tuple, Sampler] = {}


def get_sampler(model: StableDiffusion, settings: SamplerSettings, mesh=None) -> Sampler:
  """A Sampler per (modules, settings, devices), kept so later runs (e.g. other fine-tuned checkpoints
  of the same architecture) reuse its compiled loop; parameters are inputs, so swapping them is free."""
  mesh = mesh if mesh is not None else sharding.make_mesh(jax.local_devices())
  cache_key = (
    id(model.unet),
    id(model.vae),
    id(model.text_encoder),
    id(model.tokenizer),
    id(model.scheduler),
    settings,
    tuple(d.id for d in mesh.devices.flat),
  )
  sampler = _SAMPLERS.get(cache_key)
  if sampler is None:
    sampler = _SAMPLERS[cache_key] = Sampler(model, settings, mesh)
  sampler.model = model  # same modules, possibly other params / checkpoint name
  return sampler
