"""Each of the five methods trains exactly its intended parameters (bitwise-unchanged elsewhere) and
lowers the training loss on a fixed small set; pseudo-words start from real CLIP BPE embeddings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from finetune_support import tiny_sd

from jax_aug import sharding
from jax_aug.data import prompts
from jax_aug.data.imagenet_classes import class_by_wnid
from jax_aug.diffusion.loading import load_clip_tokenizer
from jax_aug.finetune import export, objective, pseudo_word
from jax_aug.finetune.trainables import Trainables, frozen_params, initial_trainable, tokenize
from jax_aug.finetune.trainer import make_loss_fn, make_optimizer, make_steps

# tiger shark ("shark": one BPE token) and tench ("tench" -> "ten" + "ch": two tokens).
WNIDS = ("n01491361", "n01440764")
METHODS = {
  "ft_conditioning": Trainables("tensor", 1, False),
  "ft_cluster_conditioning": Trainables("tensor", 2, False),
  "imagic": Trainables("tensor", 1, True),
  "textual_inversion": Trainables("pseudo_word", 1, False),
  "pseudo_word_dm": Trainables("pseudo_word", 1, True),
}


class _Config(dict):
  __getattr__ = dict.__getitem__


def _optimizer_config():
  rates = _Config(conditioning=0.05, pseudo_words=0.05, unet=1e-3)
  return _Config(learning_rate=rates, optimizer=_Config(b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, max_grad_norm=1.0))


def smooth_batch(spec, resolution, tokenizer, *, index=(0, 1, 2, 3), weight=(1, 1, 1, 1)):
  """4 smooth images (per channel a*x + b*y + c, which the VAE encodes to structured latents), 2 per class of
  WNIDS, with their indices, weights, clusters and template prompts."""
  rng = np.random.default_rng(0)
  grid = np.linspace(-1, 1, resolution, dtype=np.float32)
  coef = rng.uniform(-0.6, 0.6, (4, 3, 3, 1, 1)).astype(np.float32)
  labels = np.array([0, 0, 1, 1])
  clusters = np.array([0, 1, 0, 1]) % spec.clusters_per_class
  batch = {
    "image": coef[:, :, 0] * grid[None, :] + coef[:, :, 1] * grid[:, None] + coef[:, :, 2],
    "index": np.array(index, np.int32),
    "weight": np.array(weight, np.float32),
    "conditioning_index": (labels * spec.clusters_per_class + clusters).astype(np.int32),
  }
  if spec.conditioning == "pseudo_word":
    wnids = [WNIDS[label] for label in labels]
    texts = [
      prompts.build_prompt("textual_inversion", class_by_wnid(w), i, 0, placeholder=pseudo_word.placeholder(w))
      for i, w in enumerate(wnids)
    ]
    batch["input_ids"] = tokenize(tokenizer, texts)
  return batch


def _train(spec, steps=6):
  sd = tiny_sd()
  conditioning = spec.build([class_by_wnid(w) for w in WNIDS], sd.tokenizer)
  trainable0 = initial_trainable(spec, conditioning, sd)
  frozen = frozen_params(spec, sd)
  tokenizer = None
  if spec.conditioning == "pseudo_word":
    tokenizer, _ = pseudo_word.extend_tokenizer(sd.tokenizer, WNIDS)
  mesh = sharding.make_mesh()
  tx = make_optimizer(_optimizer_config(), trainable0)
  abar = jnp.asarray(objective.schedule_from_scheduler_config(sd.scheduler.config))
  train_step, _ = make_steps(make_loss_fn(conditioning, sd, abar), tx, mesh)
  batch = sharding.global_batch(smooth_batch(spec, sd.resolution, tokenizer), mesh)
  # The same batch and noise key at every step: the loss a step reports (before its update) is the
  # loss of the fixed set under the parameters of that moment.
  key = jax.random.key(0)
  trainable = jax.tree.map(jnp.copy, trainable0)  # the step donates its inputs
  opt_state = tx.init(trainable)
  losses = []
  for _ in range(steps + 1):
    trainable_before = jax.tree.map(jnp.copy, trainable)  # the step donates (deletes) its input
    trainable, opt_state, metrics = train_step(trainable, opt_state, frozen, batch, key)
    losses.append(float(metrics["loss"]))
  return sd, trainable0, trainable_before, losses[0], losses[-1]


def _same(a, b):
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)))


def _all_leaves_changed(a, b):
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: not np.array_equal(np.asarray(x), np.asarray(y)), a, b)))


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_exactly_its_parameters_and_lowers_the_loss(method):
  spec = METHODS[method]
  sd, trainable0, trainable, before, after = _train(spec)
  assert after < before, f"{method}: training loss on the fixed set went {before:.5f} -> {after:.5f}"

  info = {"conditioning": spec.conditioning, "clusters_per_class": spec.clusters_per_class, "wnids": list(WNIDS)}
  result = export.apply_trainable(sd, info, trainable).sd.params
  original = sd.params
  assert _same(result["vae"], original["vae"]), "the VAE must never change"
  if spec.train_unet:
    # Every U-Net tensor moved (a joint fine-tune of the whole denoiser).
    assert _all_leaves_changed(result["unet"], original["unet"])
  else:
    assert _same(result["unet"], original["unet"])

  if spec.conditioning == "tensor":
    assert _same(result["text_encoder"], original["text_encoder"])
    # Every (class, cluster) conditioning in the batch was trained.
    assert not np.any(np.all(np.asarray(trainable["conditioning"]) == np.asarray(trainable0["conditioning"]), axis=(1, 2)))
  else:
    table = np.asarray(pseudo_word.get_token_table(result["text_encoder"]))
    table0 = np.asarray(pseudo_word.get_token_table(original["text_encoder"]))
    vocab = table0.shape[0]
    assert table.shape == (vocab + len(WNIDS), table0.shape[1])
    np.testing.assert_array_equal(table[:vocab], table0)  # bitwise: only the new rows differ
    assert np.all(np.any(table[vocab:] != np.asarray(trainable0["pseudo_words"]), axis=1))
    # All other text-encoder weights are the very same arrays.
    rest = lambda p: {k: v for k, v in p["text_model"].items() if k != "embeddings"}
    assert _same(rest(result["text_encoder"]), rest(original["text_encoder"]))
    assert _same(
      result["text_encoder"]["text_model"]["embeddings"]["position_embedding"],
      original["text_encoder"]["text_model"]["embeddings"]["position_embedding"],
    )


def test_tensor_conditioning_starts_from_no_ws_prompt_encoding():
  sd = tiny_sd()
  spec = METHODS["ft_cluster_conditioning"]
  trainable = initial_trainable(spec, spec.build([class_by_wnid(w) for w in WNIDS], sd.tokenizer), sd)
  # Independent reference: the tokenizer + text encoder called directly, as the SD pipeline does.
  # No-ws simple prompts written out by hand (class name = all lemmas joined by ", ", spaces removed).
  ids = sd.tokenizer(
    ["A photo of tigershark,Galeocerdocuvieri.", "A photo of tench,Tincatinca."],
    padding="max_length",
    max_length=77,
    return_tensors="np",
  ).input_ids
  expected = np.asarray(sd.text_encoder(ids, params=sd.params["text_encoder"])[0])
  table = np.asarray(trainable["conditioning"])
  assert table.shape == (4, 77, expected.shape[-1])
  for row, label in enumerate([0, 0, 1, 1]):  # 2 clusters per class share their class's start
    np.testing.assert_allclose(table[row], expected[label], atol=1e-6)


def test_pseudo_word_init_on_real_clip_bpe():
  tokenizer = load_clip_tokenizer()
  # Real CLIP BPE: 'shark' is one token, 'tench' splits into 'ten' + 'ch'.
  assert tokenizer("shark", add_special_tokens=False).input_ids == [7980]
  assert tokenizer("tench", add_special_tokens=False).input_ids == [1149, 634]
  table = np.random.default_rng(0).normal(size=(len(tokenizer), 8)).astype(np.float32)
  classes = [class_by_wnid(w) for w in WNIDS]
  assert [pseudo_word.init_word(c) for c in classes] == ["shark", "tench"]
  init = pseudo_word.initial_embeddings(tokenizer, table, classes)
  np.testing.assert_array_equal(init[0], table[7980])
  np.testing.assert_allclose(init[1], (table[1149] + table[634]) / 2, rtol=1e-6)

  extended, ids = pseudo_word.extend_tokenizer(tokenizer, WNIDS)
  assert ids == [49408, 49409] and len(tokenizer) == 49408  # the original tokenizer is untouched
  # The pseudo-word is one token inside a template, never split by BPE.
  assert extended("a photo of a <n01440764>").input_ids == [49406, 320, 1125, 539, 320, 49409, 49407]
  with pytest.raises(ValueError, match="already exist"):
    pseudo_word.extend_tokenizer(extended, WNIDS[:1])


def test_trainables_reject_bad_configs():
  with pytest.raises(ValueError, match="unknown conditioning 'prompt'"):
    Trainables("prompt", 1, False)
  with pytest.raises(ValueError, match="clusters_per_class must be 1"):
    Trainables("pseudo_word", 5, False)
  with pytest.raises(ValueError, match="clusters_per_class must be >= 1, got 0"):
    Trainables("tensor", 0, False)
  with pytest.raises(ValueError, match="beyond CLIP's 77 tokens"):
    tokenize(load_clip_tokenizer(), ["word " * 100])
