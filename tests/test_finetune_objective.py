"""The trainer's own loss and gradients (trainer.make_loss_fn inside trainer.make_steps' train step) equal a
PyTorch computation written from diffusers' training scripts (train_text_to_image.py / textual_inversion.py:
`vae.encode(x).latent_dist.sample() * scaling_factor`, `DDPMScheduler.add_noise`, epsilon MSE) on identical
tiny weights, with the same posterior draws, noise and timesteps fed to both sides; for every trainable kind
(conditioning tensor, cluster conditionings, pseudo-words inside the text encoder, U-Net) and combinations.

Tolerances (float32 both sides; the PT->Flax weight conversion alone differs by ~1e-4 on U-Net outputs):
the weighted batch loss (unequal example weights, four different timesteps) to 1e-4 relative (measured
~6e-7); each gradient tensor to max|ours - ref| <= 2e-3 * max|ref tensor| + 2e-4 * max|ref, whole tree|
(measured: worst tensor at ~5% of that bound). Negative control: the reference with SD's scaling factor
0.18215 replaced by 1 (a realistic porting bug) moves the loss by 0.8%, 78x the tolerance.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax.traverse_util import flatten_dict
from test_finetune_methods import METHODS, WNIDS, smooth_batch  # the five methods' kinds, two classes, a batch

from jax_aug import sharding
from jax_aug.data.imagenet_classes import class_by_wnid
from jax_aug.diffusion import tiny
from jax_aug.finetune import objective, pseudo_word
from jax_aug.finetune.trainables import frozen_params, initial_trainable
from jax_aug.finetune.trainer import make_loss_fn, make_steps

LOSS_RTOL = 1e-4
LEAF_RTOL = 2e-3
TREE_RTOL = 2e-4


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """The tiny SD as a PyTorch pipeline (the reference) and converted into Flax by diffusers' PT->Flax."""
  from jax_aug.diffusion.loading import load_sd

  path = tmp_path_factory.mktemp("tiny_sd_pt") / "sd"
  pipeline = tiny.build_tiny_sd_pt(path, seed=3)
  return pipeline, load_sd(path, from_pt=True)


def test_schedule_matches_diffusers_ddpm():
  from diffusers import DDPMScheduler

  reference = DDPMScheduler(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
  ).alphas_cumprod.numpy()
  # float32 products over 1000 factors: round-off differences of ~1e-6 relative.
  np.testing.assert_allclose(objective.alphas_cumprod(), reference, rtol=1e-5)
  # Hand-computed ends: abar_0 = 1 - 0.00085; abar_999 ~= 0.0047 for SD's schedule.
  assert objective.alphas_cumprod()[0] == pytest.approx(1 - 0.00085, rel=1e-6)
  assert objective.alphas_cumprod()[-1] == pytest.approx(reference[-1], rel=1e-5)
  with pytest.raises(ValueError, match="unsupported beta_schedule 'cosine'"):
    objective.alphas_cumprod(beta_schedule="cosine")


def test_draw_noise_shapes_and_range():
  d = objective.draw_noise(jax.random.key(0), 512, (4, 8, 8), 1000)
  assert d["latent_eps"].shape == (512, 8, 8, 4) and d["noise"].shape == (512, 4, 8, 8)
  t = np.asarray(d["timesteps"])
  assert t.min() >= 0 and t.max() <= 999 and len(np.unique(t)) > 300


def _capture_gradients() -> optax.GradientTransformation:
  """An 'optimizer' whose state is the last gradient and whose update is zero: the production train step
  then hands back exactly the gradient it computed."""
  return optax.GradientTransformation(
    lambda params: jax.tree.map(jnp.zeros_like, params),
    lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), grads),
  )


def _batch(spec, sd, tokenizer):
  """4 smooth images (2 per class), unequal weights (the train step's weighted mean), template prompts."""
  return smooth_batch(spec, sd.resolution, tokenizer, index=(5, 17, 2, 40), weight=(1, 1, 1, 0.5))


def _ours(spec, sd, batch, key):
  """The loss and the gradient of the production train step (weighted mean of the per-example losses)."""
  conditioning = spec.build([class_by_wnid(w) for w in WNIDS], sd.tokenizer)
  trainable = initial_trainable(spec, conditioning, sd)
  frozen = frozen_params(spec, sd)
  abar = jnp.asarray(objective.schedule_from_scheduler_config(sd.scheduler.config))
  per_example_loss = make_loss_fn(conditioning, sd, abar)
  mesh = sharding.make_mesh()
  tx = _capture_gradients()
  train_step, _ = make_steps(per_example_loss, tx, mesh)
  start = jax.tree.map(np.asarray, trainable)
  placed = sharding.replicate(trainable, mesh)
  _, grads, metrics = train_step(
    placed, sharding.replicate(tx.init(trainable), mesh), frozen, sharding.global_batch(batch, mesh), key
  )
  return start, float(metrics["loss"]), jax.tree.map(np.asarray, grads)


def _draws(sd, batch, key):
  """The noise the trainer draws for each example: objective.draw_noise at fold_in(key, example index)."""
  res = sd.resolution // sd.vae_scale_factor
  draws = [objective.draw_noise(jax.random.fold_in(key, int(i)), 1, (4, res, res), 1000) for i in batch["index"]]
  return {name: np.concatenate([np.asarray(d[name]) for d in draws]) for name in draws[0]}


def _reference(pipeline, spec, start, batch, draws, *, scaling_factor=None):
  """diffusers' training-script loss in PyTorch; returns per-example losses, weighted loss, gradients
  (as named PyTorch tensors)."""
  from diffusers import DDPMScheduler

  vae, unet, text_encoder = pipeline.vae, pipeline.unet, pipeline.text_encoder
  scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)  # the training scripts' noise scheduler
  scaling = vae.config.scaling_factor if scaling_factor is None else scaling_factor
  for module in (vae, unet, text_encoder):
    module.requires_grad_(False)
  unet.requires_grad_(spec.train_unet)
  unet.zero_grad(set_to_none=True)
  leaves = {}
  with torch.no_grad():
    posterior = vae.encode(torch.from_numpy(batch["image"])).latent_dist
    # latent_dist.sample() draws standard normal eps; ours is channels-last.
    eps = torch.from_numpy(np.ascontiguousarray(draws["latent_eps"].transpose(0, 3, 1, 2)))
    latents = (posterior.mean + posterior.std * eps) * scaling
  noise = torch.from_numpy(draws["noise"])
  timesteps = torch.from_numpy(draws["timesteps"].astype(np.int64))
  noisy = scheduler.add_noise(latents, noise, timesteps)
  if spec.conditioning == "tensor":
    leaves["conditioning"] = torch.tensor(start["conditioning"], requires_grad=True)
    hidden = leaves["conditioning"][torch.from_numpy(batch["conditioning_index"]).long()]
  else:
    # textual_inversion.py: grow the token table by the placeholders, write their initial rows, train the
    # table (only the new rows' gradient is used; the script restores the others after each step).
    text_encoder = copy.deepcopy(text_encoder)
    vocab = text_encoder.get_input_embeddings().weight.shape[0]
    text_encoder.resize_token_embeddings(vocab + len(WNIDS))
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
      table[vocab:] = torch.tensor(start["pseudo_words"])
    table.requires_grad_(True)
    ids = torch.from_numpy(batch["input_ids"]).long()
    assert int(ids.max()) >= vocab  # the prompts do contain the pseudo-words
    hidden = text_encoder(ids)[0]
  prediction = unet(noisy, timesteps, hidden).sample
  per_example = torch.nn.functional.mse_loss(prediction.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))
  weight = torch.from_numpy(batch["weight"])
  loss = (per_example * weight).sum() / weight.sum()
  loss.backward()
  grads = {name: leaf.grad.numpy() for name, leaf in leaves.items()}
  if spec.conditioning == "pseudo_word":
    grads["pseudo_words"] = table.grad[vocab:].numpy()
  if spec.train_unet:
    grads["unet"] = {name: p.grad for name, p in unet.named_parameters()}
  return per_example.detach().numpy(), float(loss.detach()), grads


def _unet_grads_as_flax(grads, sd):
  from diffusers.models.modeling_flax_pytorch_utils import rename_key, rename_key_and_reshape_tensor

  shapes = flatten_dict(jax.tree.map(np.asarray, sd.params["unet"]))
  out = {}
  for name, grad in grads.items():
    key, value = rename_key_and_reshape_tensor(tuple(rename_key(name).split(".")), grad.numpy(), shapes)
    out[key] = value
  assert out.keys() == shapes.keys()
  return out


def _assert_gradients_close(ours, reference, what):
  ours, reference = flatten_dict(ours) if isinstance(ours, dict) else {(): ours}, reference
  scale = max(np.abs(r).max() for r in reference.values())
  assert scale > 0, f"{what}: zero reference gradient proves nothing"
  worst = 0.0
  for key, ref in reference.items():
    err = np.abs(np.asarray(ours[key]) - ref).max()
    bound = LEAF_RTOL * np.abs(ref).max() + TREE_RTOL * scale
    assert err <= bound, (what, key, err, np.abs(ref).max(), scale)
    worst = max(worst, err / bound)
  print(f"{what}: worst gradient error {worst:.3f} of its bound, largest gradient {scale:.3g}")


@pytest.mark.slow  # converts the tiny PyTorch SD once; ~5 jit compilations of the train step
@pytest.mark.parametrize("method", sorted(METHODS))
def test_trainer_loss_and_gradients_match_diffusers_training_scripts(models, method):
  pipeline, sd = models
  spec = METHODS[method]
  tokenizer = None
  if spec.conditioning == "pseudo_word":
    tokenizer, _ = pseudo_word.extend_tokenizer(sd.tokenizer, WNIDS)
  batch = _batch(spec, sd, tokenizer)
  key = jax.random.key(7)
  start, loss, grads = _ours(spec, sd, batch, key)
  draws = _draws(sd, batch, key)
  assert len(np.unique(draws["timesteps"])) == 4  # four different noise levels in one batch
  ref_losses, ref_loss, ref_grads = _reference(pipeline, spec, start, batch, draws)

  print(f"{method}: loss {loss:.6f} vs {ref_loss:.6f}, relative {abs(loss - ref_loss) / ref_loss:.2e}")
  assert loss == pytest.approx(ref_loss, rel=LOSS_RTOL)
  assert ref_losses.min() > 0.1  # a meaningful loss, not a degenerate zero
  assert set(grads) == set(ref_grads)
  for name in ("conditioning", "pseudo_words"):
    if name in grads:
      _assert_gradients_close(grads[name], {(): ref_grads[name]}, name)
  if spec.train_unet:
    _assert_gradients_close(grads["unet"], _unet_grads_as_flax(ref_grads["unet"], sd), "unet")

  if method == "imagic":  # negative control: a wrong VAE scaling factor is far outside the tolerance
    _, wrong, _ = _reference(pipeline, spec, start, batch, draws, scaling_factor=1.0)
    assert abs(wrong - loss) > 30 * LOSS_RTOL * loss  # measured: 0.8% relative, 78x the tolerance
