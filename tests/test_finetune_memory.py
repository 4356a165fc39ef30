"""The fine-tuning trainer's memory settings: bfloat16 compute over float32 master weights (model.dtype),
rematerialization by config (config.finetune.gradient_checkpointing, jax_aug/finetune/remat.py), and the
refusal of bad names.

With model.dtype="bfloat16" every convolution and matmul of the production train loss and of its gradient
runs in bfloat16 while the trainable master weights and their gradients are float32 (read off the traced
program). The production loss (`trainer.make_loss_fn`) with a policy holds one rematerialized region per ResNet /
transformer block of the U-Net (counted by hand from the U-Net's own config), not one around the whole call,
and none without a policy. That training with it gives the parameters of training without it is tested
through the trainer (tests/test_finetune_fsdp.py: its split runs rematerialize, its replicated one does
not). Bad names are refused, naming them and the valid ones.
"""

import collections

import jax
import jax.numpy as jnp
import pytest
from finetune_support import tiny_sd, tiny_sd_path

from jax_aug.data.imagenet_classes import class_by_wnid
from jax_aug.diffusion.loading import load_sd
from jax_aug.finetune import objective, remat, trainer
from jax_aug.finetune.trainables import Trainables, frozen_params, initial_trainable


def _batch(sd) -> dict:
  r = sd.resolution
  return {
    "image": jnp.zeros((2, 3, r, r)),
    "index": jnp.arange(2, dtype=jnp.int32),
    "weight": jnp.ones(2),
    "conditioning_index": jnp.arange(2, dtype=jnp.int32),
  }


def _blocks(unet_config) -> int:
  """ResNet and transformer blocks of a diffusers UNet2DConditionModel config, counted by hand."""
  down = len(unet_config.down_block_types) * unet_config.layers_per_block
  up = len(unet_config.up_block_types) * (unet_config.layers_per_block + 1)
  cross_down = sum("CrossAttn" in t for t in unet_config.down_block_types) * unet_config.layers_per_block
  cross_up = sum("CrossAttn" in t for t in unet_config.up_block_types) * (unet_config.layers_per_block + 1)
  return down + up + 2 + cross_down + cross_up + 1  # the mid block: 2 ResNets, 1 transformer


def test_block_remat_puts_one_rematerialized_region_around_each_unet_block():
  sd = tiny_sd()
  spec = Trainables("tensor", 1, True)
  conditioning = spec.build([class_by_wnid(w) for w in ("n01491361", "n01440764")], sd.tokenizer)
  trainable, frozen = initial_trainable(spec, conditioning, sd), frozen_params(spec, sd)
  abar = jnp.asarray(objective.schedule_from_scheduler_config(sd.scheduler.config))
  batch = _batch(sd)

  # The primitive jax.checkpoint traces to (its printed name differs across jax versions).
  checkpoint_name = jax.make_jaxpr(jax.checkpoint(jnp.sin))(1.0).eqns[0].primitive.name

  def regions(policy: str) -> int:
    loss = trainer.make_loss_fn(conditioning, sd, abar, gradient_checkpointing=policy)
    return str(jax.make_jaxpr(lambda t: loss(t, frozen, batch, jax.random.key(0)))(trainable)).count(f"{checkpoint_name}[")

  # Tracing only (no compile): the gradients' equality is tested through the trainer in test_finetune_fsdp.py.
  assert regions("nothing_saveable") == _blocks(sd.unet.config) == 12
  assert regions("") == 0


def test_bfloat16_model_computes_in_bfloat16_over_float32_master_weights():
  sd = load_sd(tiny_sd_path(), dtype="bfloat16")
  spec = Trainables("tensor", 1, True)
  conditioning = spec.build([class_by_wnid(w) for w in ("n01491361", "n01440764")], sd.tokenizer)
  trainable, frozen = initial_trainable(spec, conditioning, sd), frozen_params(spec, sd)
  assert {x.dtype for x in jax.tree.leaves(trainable)} == {jnp.dtype(jnp.float32)}  # master weights
  assert {x.dtype for x in jax.tree.leaves(frozen)} == {jnp.dtype(jnp.bfloat16)}
  loss = trainer.make_loss_fn(conditioning, sd, jnp.asarray(objective.schedule_from_scheduler_config(sd.scheduler.config)))
  jaxpr = jax.make_jaxpr(jax.grad(lambda t: loss(t, frozen, _batch(sd), jax.random.key(0)).mean()))(trainable)
  kinds = collections.Counter()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
        kinds[(eqn.primitive.name, *(str(v.aval.dtype) for v in (*eqn.invars, *eqn.outvars)))] += 1
      for param in eqn.params.values():
        for sub in param if isinstance(param, (list, tuple)) else [param]:
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            walk(inner)

  walk(jaxpr.jaxpr)
  # VAE encoder, text encoder, U-Net forward and backward: all in bfloat16.
  assert kinds and set(kinds) == {
    ("conv_general_dilated", "bfloat16", "bfloat16", "bfloat16"),
    ("dot_general", "bfloat16", "bfloat16", "bfloat16"),
  }, kinds
  assert {v.dtype for v in jaxpr.out_avals} == {jnp.dtype(jnp.float32)}  # gradients of the master weights


def test_unknown_policy_and_parameter_sharding_are_refused_naming_them():
  with pytest.raises(ValueError, match=r"gradient_checkpointing='dots_everything'.*nothing_saveable"):
    remat.check_policy("dots_everything")
  with pytest.raises(ValueError, match=r"save_only_these_names"):  # a factory, not a policy
    with remat.rematerialized_blocks("save_only_these_names"):
      pass
  from jax_aug import sharding

  with pytest.raises(ValueError, match=r"config.finetune.parameter_sharding='zero3'.*'replicated', 'fsdp'"):
    sharding.check_parameter_sharding("zero3", "config.finetune.parameter_sharding")
