"""Rematerialization of the U-Net's blocks in the backward pass (config.finetune.gradient_checkpointing).

jax.checkpoint around the whole U-Net call would not lower the peak: its backward pass recomputes the whole
forward pass in one piece and holds all of its activations again. Each of diffusers' Flax ResNet
blocks and transformer blocks is wrapped instead, with flax's lifted `nn.checkpoint` applied through
`nn.intercept_methods` (diffusers' modules are left as they are): the forward pass keeps each block's inputs
and what the policy saves, and the backward pass recomputes one block's activations at a time. The
parameters and the math are unchanged (the gradients equal those without remat up to float rounding).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import flax.linen as nn
import jax
from diffusers.models.attention_flax import FlaxBasicTransformerBlock
from diffusers.models.resnet_flax import FlaxResnetBlock2D

# The argument-free policies of jax.checkpoint_policies (the others are factories that need arguments).
POLICIES = (
  "everything_saveable",
  "nothing_saveable",
  "dots_saveable",
  "checkpoint_dots",
  "dots_with_no_batch_dims_saveable",
  "checkpoint_dots_with_no_batch_dims",
)
# The U-Net's layers: every ResNet block (two 3x3 convs, GroupNorms) and transformer block (self- and
# cross-attention, feed-forward); together they hold nearly all of its activations.
BLOCKS = (FlaxResnetBlock2D, FlaxBasicTransformerBlock)

_inside_block = contextvars.ContextVar("inside_rematerialized_block", default=False)


def check_policy(name: str) -> None:
  """Refuses a config.finetune.gradient_checkpointing that is neither "" (off) nor one of POLICIES."""
  if name and name not in POLICIES:
    raise ValueError(
      f"config.finetune.gradient_checkpointing={name!r} is not a rematerialization policy: expected \"\" (off)"
      f" or one of jax.checkpoint_policies' {list(POLICIES)}"
    )


@contextlib.contextmanager
def rematerialized_blocks(policy_name: str) -> Iterator[None]:
  """Within it, every call of a BLOCKS module (traced inside a flax `apply`) is rematerialized with the
  jax.checkpoint_policies policy `policy_name`; "" changes nothing."""
  check_policy(policy_name)
  if not policy_name:
    yield
    return
  policy = getattr(jax.checkpoint_policies, policy_name)

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name != "__call__" or not isinstance(context.module, BLOCKS) or _inside_block.get():
      return next_fun(*args, **kwargs)

    def block(module, *arrays):
      token = _inside_block.set(True)  # the call below comes back through this interceptor
      try:
        return module(*arrays, **kwargs)  # keyword arguments (deterministic=...) stay Python values
      finally:
        _inside_block.reset(token)

    return nn.checkpoint(block, policy=policy)(context.module, *args)

  with nn.intercept_methods(interceptor):
    yield
