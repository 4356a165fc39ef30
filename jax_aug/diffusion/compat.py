"""Repairs of the JAX APIs that jax 0.10 removed but diffusers 0.39's Flax code still calls.

diffusers 0.39 is the last release with Flax classes (0.40 removed them), so it will never be fixed
upstream; we keep jax current instead and replace exactly the functions that break, nothing more:

- `safety_checker_flax.jax_cosine_distance`: `jnp.clip(..., a_min=...)` (the keyword is gone in
  jax 0.10) made every safety-checker call raise TypeError.
- `FlaxDDPMScheduler._get_variance`: the same `a_min=` keyword in the "fixed_small(_log)" variance.
- `FlaxModelMixin._cast_floating_to` (behind `to_bf16` / `to_fp16` / `to_fp32`): `jax.tree_map` and
  `jax.tree_flatten` were removed (and its mask pairing was order-dependent, see below).

A grep of diffusers' and transformers' Flax code on the paths we use (CLIP text/vision, UNet, VAE,
PNDM/DDIM/DDPM/Euler schedulers, safety checker, modeling utils) for the other removed names
(`jax.tree_*` aliases, `tree_multimap`, `jax.random.KeyArray`, `jax.experimental.maps`, `clip`
keywords) found nothing else. `apply()` runs on import of `jax_aug.diffusion` and is idempotent.

One repair is for time, not a removed API: `modeling_flax_utils.convert_pytorch_state_dict_to_flax` (behind
`from_pretrained(from_pt=True)`) builds a random initialisation of the model only to read its parameter names
and shapes, and diffusers runs that `init_weights` eagerly, a whole forward pass at the model's sample size
(SD v1.4's U-Net at 64 x 64 latents, its VAE at 512 px): minutes on a CPU. `_convert_pytorch_state_dict_to_flax`
hands it the same names and shapes from `jax.eval_shape` (no arithmetic; diffusers itself checks the loaded
weights against `jax.eval_shape(model.init_weights)` right after), so the converted weights are unchanged.

A second repair for time: diffusers' `FlaxAttention` computes every attention in plain XLA, the
[T, S] score matrix of every head materialised in memory (SD v1.4's first level at 512 px: 4,096 x 4,096 per
head, 8 heads, 2 x batch rows under guidance), where diffusers' PyTorch pipeline runs
`scaled_dot_product_attention`, a fused flash kernel on CUDA GPUs. `_attention_call` runs the same module (its
own q/k/v/out projections and scale) through `jax.nn.dot_product_attention(implementation="cudnn")`, cuDNN's
flash attention, where it applies: a CUDA GPU, a half-precision model (cuDNN's kernel takes bf16/fp16 only) and a
layer whose shapes jax's cuDNN checks accept forward and backward (head dim a multiple of 8, <= 256 on Hopper,
<= 128 before; in training jax 0.11.2 also wants even lengths, which cross-attention's 77 text states are not). Every
other call (CPU, TPU, float32 models, refused layers) is diffusers' own `__call__`, unchanged.

It also silences the deprecation notices of those pinned Flax classes (`quiet_flax_deprecation_notices`), so a
run's terminal output is its stage lines and progress bars.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
from diffusers.models import attention_flax, modeling_flax_pytorch_utils, modeling_flax_utils
from diffusers.pipelines.stable_diffusion import safety_checker_flax
from diffusers.schedulers import scheduling_ddpm_flax
from flax import linen as nn
from flax.traverse_util import flatten_dict, unflatten_dict

_APPLIED = False


def jax_cosine_distance(emb_1: jax.Array, emb_2: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Cosine similarity matrix of two row sets, as diffusers computes it, with `jnp.clip(min=...)`."""
  norm_emb_1 = (emb_1.T / jnp.clip(jnp.linalg.norm(emb_1, axis=1), min=eps)).T
  norm_emb_2 = (emb_2.T / jnp.clip(jnp.linalg.norm(emb_2, axis=1), min=eps)).T
  return jnp.matmul(norm_emb_1, norm_emb_2.T)


def _ddpm_get_variance(self, state, t, predicted_variance=None, variance_type=None):
  """FlaxDDPMScheduler._get_variance with the removed `a_min=` keyword replaced by `min=`."""
  common = state.common
  alpha_prod_t = common.alphas_cumprod[t]
  alpha_prod_t_prev = jnp.where(t > 0, common.alphas_cumprod[t - 1], jnp.array(1.0, dtype=self.dtype))
  variance = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * common.betas[t]
  variance_type = self.config.variance_type if variance_type is None else variance_type
  if variance_type == "fixed_small":
    return jnp.clip(variance, min=1e-20)
  if variance_type == "fixed_small_log":
    return jnp.log(jnp.clip(variance, min=1e-20))
  if variance_type == "fixed_large":
    return common.betas[t]
  if variance_type == "fixed_large_log":
    return jnp.log(common.betas[t])
  if variance_type == "learned":
    return predicted_variance
  if variance_type == "learned_range":
    frac = (predicted_variance + 1) / 2
    return frac * common.betas[t] + (1 - frac) * variance
  return variance  # diffusers' fall-through for unknown types: the unclipped posterior variance


def _cast_floating_to(self, params: Any, dtype: jnp.dtype, mask: Any = None) -> Any:
  """FlaxModelMixin._cast_floating_to on `jax.tree.map`, with the mask matched to params by key.

  diffusers zipped the mask's leaves (sorted-key order) with the params' flattened keys (insertion
  order), which cast the wrong leaves whenever the two orders differ; a lookup by path cannot."""
  del self

  def conditional_cast(param):
    if isinstance(param, jnp.ndarray) and jnp.issubdtype(param.dtype, jnp.floating):
      param = param.astype(dtype)
    return param

  if mask is None:
    return jax.tree.map(conditional_cast, params)
  flat_params = flatten_dict(params)
  flat_mask = flatten_dict(mask)
  for key, param in flat_params.items():
    if flat_mask[key]:
      flat_params[key] = conditional_cast(param)
  return unflatten_dict(flat_params)


class _ShapeOnlyInit:
  """Stands in for a Flax model where only `init_weights`' names and shapes are read."""

  def __init__(self, model):
    self._model = model

  def init_weights(self, rng: jax.Array) -> Any:
    return jax.eval_shape(self._model.init_weights, rng)


def _convert_pytorch_state_dict_to_flax(pt_state_dict, flax_model, init_key: int = 42):
  """diffusers' PyTorch -> Flax conversion, its random initialisation replaced by its shapes (see above)."""
  return modeling_flax_pytorch_utils.convert_pytorch_state_dict_to_flax(
    pt_state_dict, _ShapeOnlyInit(flax_model), init_key=init_key
  )


# diffusers' method as written (flax wraps a Module's methods with its state management at class creation; ours
# is wrapped the same way in apply(), so the original is called from inside it unwrapped).
_DIFFUSERS_ATTENTION_CALL = attention_flax.FlaxAttention.__call__.__wrapped__
_FUSED_ATTENTION_DTYPES = (jnp.bfloat16, jnp.float16)


def fused_attention(
  module: attention_flax.FlaxAttention, hidden_states: jax.Array, context: jax.Array | None, implementation: str
) -> jax.Array:
  """FlaxAttention's output before its dropout, through jax.nn.dot_product_attention's `implementation`
  ("cudnn" or "xla"): the module's own projections in [batch, length, heads, head dim] layout, its own scale."""
  context = hidden_states if context is None else context
  batch = hidden_states.shape[0]

  def split_heads(projected: jax.Array) -> jax.Array:
    return projected.reshape(batch, -1, module.heads, module.dim_head)

  attended = jax.nn.dot_product_attention(
    split_heads(module.query(hidden_states)),
    split_heads(module.key(context)),
    split_heads(module.value(context)),
    scale=module.scale,
    implementation=implementation,
  )
  return module.proj_attn(attended.reshape(batch, -1, module.heads * module.dim_head))


def cudnn_attention_applies(platform_version: str, dtype: Any) -> bool:
  """Whether a FlaxAttention of compute `dtype` is tried on cuDNN's flash attention on a backend whose
  `platform_version` is this (jax's own test for CUDA is "cuda" in it; ROCm and CPU/TPU have no cuDNN)."""
  return "cuda" in platform_version.lower() and any(jnp.dtype(dtype) == jnp.dtype(d) for d in _FUSED_ATTENTION_DTYPES)


def cudnn_accepts(query_shape: tuple[int, ...], key_shape: tuple[int, ...], dtype: Any) -> bool:
  """Whether jax's cuDNN flash attention takes queries / keys (= values) of these [batch, length, heads, head
  dim] shapes forward and backward. Its checks raise NotImplementedError while tracing, and the backward's are
  stricter (jax 0.11.2 on an H100 refuses an odd key length in training: 77 text states). A guard around the call
  would not do: under rematerialisation (config.finetune.gradient_checkpointing) the forward rule runs when the
  remat'd block is differentiated, outside this module's call. So both are traced here, abstractly, first."""
  query = jax.ShapeDtypeStruct(query_shape, dtype)
  key = jax.ShapeDtypeStruct(key_shape, dtype)

  def forward_and_backward(q, k, v):
    attended, backward = jax.vjp(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="cudnn"), q, k, v)
    return backward(attended)

  try:
    jax.eval_shape(forward_and_backward, query, key, key)
  except NotImplementedError:
    return False
  return True


def _attention_call(self, hidden_states, context=None, deterministic=True):
  """FlaxAttention.__call__ on cuDNN's flash attention where it applies and accepts the layer (see the module's
  docstring), else diffusers' own. Decided while tracing, once per layer per compilation."""
  if cudnn_attention_applies(jax.devices()[0].client.platform_version, self.dtype):
    keys = hidden_states if context is None else context
    batch = hidden_states.shape[0]
    query_shape = (batch, hidden_states.shape[1], self.heads, self.dim_head)
    if cudnn_accepts(query_shape, (batch, keys.shape[1], self.heads, self.dim_head), self.dtype):
      attended = fused_attention(self, hidden_states, context, "cudnn")
      return self.dropout_layer(attended, deterministic=deterministic)
  return _DIFFUSERS_ATTENTION_CALL(self, hidden_states, context, deterministic)


# flax reports a method to interceptors (nn.intercept_methods) by its function's name: keep diffusers' one.
_attention_call.__name__ = _attention_call.__qualname__ = "__call__"


# The deprecation notices of the Flax classes we pin on purpose (diffusers 0.39 is the last release with them,
# transformers 4.57 the last before v5, see above): diffusers logs one per Flax layer or scheduler constructed
# (about 190 lines per tiny sampling run), transformers one per process. We know, and chose the pin; every other
# message of both libraries still shows.
FLAX_DEPRECATION_NOTICES = (
  "Flax classes are deprecated and will be removed in Diffusers",
  "TensorFlow and JAX classes are deprecated and will be removed in Transformers",
)


class _DropFlaxDeprecationNotices(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(FLAX_DEPRECATION_NOTICES)


def quiet_flax_deprecation_notices() -> None:
  """Drops FLAX_DEPRECATION_NOTICES at the handlers of diffusers' and transformers' library loggers (their
  child loggers log through them only: the libraries turn propagation off)."""
  from diffusers.utils import logging as diffusers_logging
  from transformers.utils import logging as transformers_logging

  for library_logger in (diffusers_logging.get_logger(), transformers_logging.get_logger()):
    for handler in library_logger.handlers:
      if not any(isinstance(f, _DropFlaxDeprecationNotices) for f in handler.filters):
        handler.addFilter(_DropFlaxDeprecationNotices())


def apply() -> None:
  """Installs the repairs into the diffusers modules (module attributes, so every caller sees them) and
  silences the pinned Flax classes' deprecation notices."""
  global _APPLIED
  if _APPLIED:
    return
  quiet_flax_deprecation_notices()
  safety_checker_flax.jax_cosine_distance = jax_cosine_distance
  scheduling_ddpm_flax.FlaxDDPMScheduler._get_variance = _ddpm_get_variance
  modeling_flax_utils.FlaxModelMixin._cast_floating_to = _cast_floating_to
  # from_pretrained calls the name it imported into modeling_flax_utils; the original stays in its own module.
  modeling_flax_utils.convert_pytorch_state_dict_to_flax = _convert_pytorch_state_dict_to_flax
  attention_flax.FlaxAttention.__call__ = nn.module.wrap_method_once(_attention_call)
  _APPLIED = True
