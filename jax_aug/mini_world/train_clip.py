"""Stage `clip`: the tiny CLIP (transformers' FlaxCLIPModel, real CLIP BPE tokenizer) trained contrastively
on the corpus's (image, caption) pairs, noisy and wrong captions included, as LAION's CLIP was.

Loss: CLIP's symmetric cross-entropy over the batch's image-text similarity matrix with the learned
temperature (logit scale clipped at 100, as CLIP does). Augmentation: horizontal flip and a shift of up to
`max_shift` px (edge-padded), then a photometric jitter (`photometric`: brightness, per-channel gain, gamma;
generic colour-jitter ranges, the same for every concept), drawn per step from (seed, step). The jitter was
added after the 20,000-step CLIP without it lost its zero-shot images to same-coloured classes under the
target's lighting (docs/mini_world.md); the U-Net and VAE train on the corpus as drawn.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_aug.mini_world import models, quality
from jax_aug.mini_world.stage_loop import Stage
from jax_aug.retrieval.clip_model import ClipModel, embed_images, embed_texts

MAX_LOGIT_SCALE = float(np.log(100.0))


def augment(images: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
  """Random horizontal flip and integer shift (edge padding) per image; uint8 [B, H, W, 3] in and out."""
  b, h, w, _ = images.shape
  flip = rng.uniform(size=b) < 0.5
  images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
  if not max_shift:
    return images
  padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="edge")
  dy, dx = rng.integers(0, 2 * max_shift + 1, (2, b))
  rows = dy[:, None] + np.arange(h)[None]
  cols = dx[:, None] + np.arange(w)[None]
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def photometric(
  images: np.ndarray,
  rng: np.random.Generator,
  brightness: tuple[float, float],
  channel_gain: float,
  gamma: tuple[float, float],
) -> np.ndarray:
  """Per image: x -> 255 (clip(brightness * gain_c * x / 255, 0, 1)) ** gamma, with brightness uniform in
  `brightness`, each channel's gain uniform in 1 +- `channel_gain` and gamma log-uniform in `gamma`;
  uint8 [B, H, W, 3] in and out (rounded)."""
  b = images.shape[0]
  scale = rng.uniform(*brightness, (b, 1, 1, 1)) * rng.uniform(1 - channel_gain, 1 + channel_gain, (b, 1, 1, 3))
  exponent = np.exp(rng.uniform(np.log(gamma[0]), np.log(gamma[1]), (b, 1, 1, 1)))
  jittered = np.clip(images.astype(np.float64) * scale / 255.0, 0.0, 1.0) ** exponent
  return np.round(jittered * 255.0).astype(np.uint8)


def pixel_values(images: jax.Array) -> jax.Array:
  """uint8 [B, H, W, 3] -> CLIP-normalised float32 [B, 3, H, W] (FlaxCLIPModel takes channels first)."""
  x = (images.astype(jnp.float32) / 255.0 - jnp.asarray(models.CLIP_MEAN)) / jnp.asarray(models.CLIP_STD)
  return jnp.transpose(x, (0, 3, 1, 2))


def contrastive_loss(logits_per_image: jax.Array) -> jax.Array:
  labels = jnp.arange(logits_per_image.shape[0])
  image_loss = optax.softmax_cross_entropy_with_integer_labels(logits_per_image, labels).mean()
  text_loss = optax.softmax_cross_entropy_with_integer_labels(logits_per_image.T, labels).mean()
  return (image_loss + text_loss) / 2


def _decay_mask(params):
  """Weight decay on matrices only (not biases, norms, embeddings' scale or the temperature)."""
  return jax.tree_util.tree_map_with_path(
    lambda path, leaf: leaf.ndim >= 2 and "embedding" not in jax.tree_util.keystr(path), params
  )


def build_clip(seed: int):
  from transformers import FlaxCLIPModel

  return FlaxCLIPModel(models.clip_config(), seed=seed, _do_init=True)


def as_clip_model(model, params, tokenizer, name: str) -> ClipModel:
  return ClipModel(model=model, params=params, tokenizer=tokenizer, image_processor=models.image_processor(), name=name)


def zero_shot_top1(clip: ClipModel, images: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 of the class whose "A photo of w(n)." prompt is nearest, over `concepts.WNIDS` order."""
  text = embed_texts(clip, quality.class_prompts())
  return quality.zero_shot_top1(embed_images(clip, list(images), batch_size=128), labels, text)


def clip_stage(config, corpus, tokenizer, monitor: tuple[np.ndarray, np.ndarray], seed: int) -> tuple[Stage, object]:
  model = build_clip(seed)
  ids, mask = corpus.tokens(tokenizer, models.CAPTION_TOKENS, config.cache)
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.lr, min(config.warmup, config.steps // 2), config.steps)
  tx = optax.adamw(schedule, b1=0.9, b2=0.98, eps=1e-6, weight_decay=config.weight_decay, mask=_decay_mask)

  def init():
    return {"params": model.params, "opt_state": tx.init(model.params)}

  @jax.jit
  def step(state, batch, key):
    del key  # CLIP has no dropout here; augmentation is drawn in `batch`

    def loss_fn(params):
      out = model(
        input_ids=batch["ids"],
        pixel_values=pixel_values(batch["images"]),
        attention_mask=batch["mask"],
        params=params,
        train=False,
      )
      return contrastive_loss(out.logits_per_image), out.logits_per_image

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    params = dict(params, logit_scale=jnp.minimum(params["logit_scale"], MAX_LOGIT_SCALE))
    accuracy = jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(logits.shape[0]))
    return {"params": params, "opt_state": opt_state}, {
      "loss": loss,
      "batch_top1": accuracy,
      "logit_scale": jnp.exp(params["logit_scale"]),
    }

  def batch(step_index):
    rng = np.random.default_rng([seed, 1, step_index])
    chosen = np.sort(rng.choice(len(corpus), config.batch_size, replace=False))
    images = augment(corpus.images[chosen], rng, config.max_shift)
    if config.photometric:
      images = photometric(images, rng, **config.photometric)
    return {"ids": ids[chosen], "mask": mask[chosen], "images": images}

  def evaluate(state):
    clip = as_clip_model(model, state["params"], tokenizer, "mini-world tiny CLIP")
    return {"monitor_zero_shot_top1": zero_shot_top1(clip, *monitor)}

  return Stage.configured("clip", config, init=init, step=step, batch=batch, evaluate=evaluate), model


def export_clip(model, params, tokenizer, folder: str | Path) -> Path:
  """A folder `jax_aug.retrieval.clip_model.load_clip` reads: config + safetensors weights + tokenizer +
  image processor."""
  folder = Path(folder)
  model.save_pretrained(folder, params=params, safe_serialization=True)
  tokenizer.save_pretrained(folder)
  models.image_processor().save_pretrained(folder)
  return folder


def export_checkpoint(checkpoint: str | Path, folder: str | Path, seed: int = 0) -> tuple[Path, int]:
  """Exports the CLIP parameters of a `clip` stage checkpoint (an unfinished run) like `export_clip`;
  returns (folder, the checkpoint's step)."""
  from flax import serialization

  from jax_aug.diffusion.loading import load_clip_tokenizer

  saved = serialization.msgpack_restore(Path(checkpoint).read_bytes())
  model = build_clip(seed)
  params = serialization.from_state_dict(model.params, saved["state"]["params"])
  return export_clip(model, params, load_clip_tokenizer(), folder), int(saved["step"])
