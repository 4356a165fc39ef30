"""One attention layer of SD v1.4's U-Net, our FlaxAttention paths vs PyTorch's scaled_dot_product_attention.

  GPU: XLA_PYTHON_CLIENT_PREALLOCATE=false python benchmarks/attention_throughput.py
  CPU: python benchmarks/attention_throughput.py --dtype=float32 --batch=2 --length=1024

The layers of SD v1.4 at 512 px under guidance (2 x images rows): self-attention over 64 x 64 = 4,096 positions
(8 heads of 40) and 32 x 32 = 1,024 (8 of 80); cross-attention to 77 text states. Three ways, same weights,
same inputs: `ours` (FlaxAttention's __call__ as jax_aug.diffusion.compat installs it, labelled with the route it
takes for the layer: cuDNN's flash attention on a CUDA GPU in half precision where cuDNN accepts the layer forward
and backward, else diffusers' math), `diffusers` (diffusers' own Flax math: the score matrix materialised in
XLA), `pytorch` (diffusers' PyTorch Attention with its default processor, scaled_dot_product_attention).
Prints each one's time per call (median of `--rounds`), the ratios against PyTorch, and the largest differences
of the outputs from PyTorch's; `--backward`: the same for the forward + backward pass, comparing the gradient with
respect to the layer's input.
"""

from __future__ import annotations

import time

import machine_load
import numpy as np
from absl import flags

_BATCH = flags.DEFINE_integer("batch", 16, "Rows (images x 2 under guidance).")
_LENGTH = flags.DEFINE_multi_integer("length", [4096, 1024], "Query positions of the self-attention layers.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float16", "float32"], "Our compute dtype.")
_ROUNDS = flags.DEFINE_integer("rounds", 20, "Timed calls per way.")
_BACKWARD = flags.DEFINE_bool(
  "backward",
  False,
  "Time the forward and backward pass (fine-tuning's use) instead of the forward alone, and compare the gradient"
  " with respect to the layer's input with PyTorch autograd's.",
)

# query positions -> (channels, heads) of SD v1.4's U-Net level at that size (block_out_channels, 8 heads).
SD14_LEVELS = {4096: (320, 8), 1024: (640, 8), 256: (1280, 8), 64: (1280, 8)}


def median_seconds(fn, rounds: int) -> float:
  fn()  # compile / autotune
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def measure_layer(length: int, context_width: int | None, dtype, torch_device: str, torch_dtype) -> None:
  """Times one SD v1.4 attention layer three ways and prints one line per way."""
  import jax
  import jax.numpy as jnp
  import torch
  from diffusers.models.attention_flax import FlaxAttention
  from diffusers.models.attention_processor import Attention

  from jax_aug.diffusion import compat

  channels, heads = SD14_LEVELS[length]
  layer = FlaxAttention(query_dim=channels, heads=heads, dim_head=channels // heads, dtype=dtype)
  hidden = jax.random.normal(jax.random.key(0), (_BATCH.value, length, channels), dtype)
  context = None if context_width is None else jax.random.normal(jax.random.key(1), (_BATCH.value, 77, context_width), dtype)
  params = layer.init(jax.random.key(2), hidden, context)
  cotangent = jax.random.normal(jax.random.key(3), hidden.shape[:2] + (channels,), dtype)

  def jitted(attention):
    def forward(p, h, c):
      return layer.apply(p, h, c, method=attention)

    if not _BACKWARD.value:
      return jax.jit(forward)
    # d/dh of <forward(h), cotangent>: the input gradient a fine-tuning step backpropagates through the layer.
    return jax.jit(jax.grad(lambda p, h, c: jnp.vdot(forward(p, h, c).astype(jnp.float32), cotangent), argnums=1))

  ours = jitted(None)  # FlaxAttention.__call__ as compat installs it: what the engine and the trainer run
  keys = length if context is None else 77
  cudnn = compat.cudnn_attention_applies(jax.devices()[0].client.platform_version, dtype) and compat.cudnn_accepts(
    (_BATCH.value, length, heads, channels // heads), (_BATCH.value, keys, heads, channels // heads), dtype
  )
  plain = jitted(compat._DIFFUSERS_ATTENTION_CALL)
  twin = pytorch_twin(Attention, params["params"], channels, heads, context_width).to(torch_device, torch_dtype)

  def to_torch(array):
    return None if array is None else torch.from_numpy(np.array(array, np.float32)).to(torch_device, torch_dtype)

  torch_hidden, torch_context, torch_cotangent = to_torch(hidden), to_torch(context), to_torch(cotangent)

  def run_pytorch():
    if _BACKWARD.value:
      leaf = torch_hidden.detach().requires_grad_(True)
      twin(leaf, encoder_hidden_states=torch_context).backward(torch_cotangent)
      out = leaf.grad
    else:
      with torch.no_grad():
        out = twin(torch_hidden, encoder_hidden_states=torch_context)
    if torch_device == "cuda":
      torch.cuda.synchronize()
    return out

  ways = {
    f"ours ({'cudnn' if cudnn else 'diffusers'})": lambda: ours(params, hidden, context).block_until_ready(),
    "diffusers": lambda: plain(params, hidden, context).block_until_ready(),
    "pytorch": run_pytorch,
  }
  seconds = {name: median_seconds(fn, _ROUNDS.value) for name, fn in ways.items()}
  outputs = {
    name: np.asarray(ways[name]().float().cpu() if name == "pytorch" else ways[name](), np.float32) for name in ways
  }
  kind = ("self" if context is None else "cross") + (" fwd+bwd" if _BACKWARD.value else "")
  for name in ways:
    print(
      f"  {kind} T={length:5d} {heads}x{channels // heads:<4d} {name:17s} {seconds[name] * 1e3:8.3f} ms"
      f"  {seconds['pytorch'] / seconds[name]:5.2f}x PyTorch's speed"
      f"  max|{'d input' if _BACKWARD.value else 'out'} - PyTorch's| {np.abs(outputs[name] - outputs['pytorch']).max():.2e}"
    )


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import torch

  torch_device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
  torch_dtype = torch.float16 if torch_device == "cuda" else torch.float32
  dtype = jnp.dtype(_DTYPE.value)
  print(f"device={jax.devices()[0].device_kind} ours={dtype.name} pytorch={torch_dtype} batch={_BATCH.value}")
  for length in _LENGTH.value:
    for context_width in (None, 768):  # self-attention; cross-attention to CLIP ViT-L/14's 77 text states
      measure_layer(length, context_width, dtype, torch_device, torch_dtype)


def pytorch_twin(attention_class, weights, channels: int, heads: int, context_width: int | None):
  """diffusers' PyTorch Attention (default processor: scaled_dot_product_attention) with the Flax layer's weights."""
  import torch

  twin = attention_class(channels, cross_attention_dim=context_width, heads=heads, dim_head=channels // heads)
  with torch.no_grad():
    for name, linear in (("to_q", twin.to_q), ("to_k", twin.to_k), ("to_v", twin.to_v), ("to_out_0", twin.to_out[0])):
      linear.weight.copy_(torch.from_numpy(np.array(weights[name]["kernel"], np.float32).T))
      if "bias" in weights[name]:
        linear.bias.copy_(torch.from_numpy(np.array(weights[name]["bias"], np.float32)))
  return twin.eval()


if __name__ == "__main__":
  machine_load.run(main)
