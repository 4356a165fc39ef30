"""ResNet with torchvision's architecture (v1.5: the stride sits on the 3x3 conv of a bottleneck).

Module and parameter names mirror torchvision's `resnet50` (`conv1`, `bn1`, `layer1_0/conv2`, ...,
`fc`) so the weight port in `port.py` is a renaming plus kernel transposes. Parameters are always
float32; `dtype` only sets the compute precision (bfloat16 on accelerators).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

RESNET50_STAGE_SIZES = (3, 4, 6, 3)

# torchvision initialises convs with kaiming_normal_(mode="fan_out", nonlinearity="relu") (an untruncated
# normal), and nn.Linear weight and bias with U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
fc_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def fc_bias_init(fan_in: int):
  bound = fan_in**-0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class BatchNorm(nn.Module):
  """BatchNorm with PyTorch's semantics, which flax's nn.BatchNorm does not have in one respect.

  Training normalises with the biased batch variance (as both do) but PyTorch updates the running
  variance with the *unbiased* one (times n / (n - 1)); matching that keeps running stats, and so eval
  accuracy, equal to torchvision's. PyTorch's momentum 0.1 is `running = 0.9 * running + 0.1 * batch`.
  Statistics are computed in at least float32 whatever the compute dtype. Under jit with a batch sharded over a
  mesh, the mean is over the global batch (synchronised BN), so results do not depend on device count.

  `groups` > 1 splits the batch into that many consecutive equal parts normalised by their own statistics:
  with groups = the number of devices, each part is one device's shard, as PyTorch DDP without SyncBatchNorm
  normalises per GPU (the paper's setting). The running statistics then follow group 0 only, as DDP's
  default `broadcast_buffers=True` copies rank 0's buffers to every rank before each forward.
  """

  momentum: float = 0.1  # PyTorch convention: weight of the new batch statistics.
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32
  groups: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
    if train:
      if x.shape[0] % self.groups:
        raise ValueError(f"batch of {x.shape[0]} does not split into {self.groups} BatchNorm groups")
      # [groups, batch / groups, ..., features]: statistics per group, broadcast back to its examples.
      x_stats = x.astype(jnp.promote_types(x.dtype, jnp.float32)).reshape((self.groups, -1) + x.shape[1:])
      axes = tuple(range(1, x_stats.ndim - 1))
      mean = jnp.mean(x_stats, axes, keepdims=True)
      var = jnp.mean(jnp.square(x_stats - mean), axes, keepdims=True)
      if not self.is_initializing():
        n = x.size // features // self.groups
        ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean[0].reshape(features)
        ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * var[0].reshape(features) * (n / max(n - 1, 1))
    else:
      mean, var = ra_mean.value, ra_var.value
    # Folding the affine into one multiply-add keeps the normalisation a single fused elementwise op.
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    add = bias - mean * mul
    if not train:
      return x * mul.astype(self.dtype) + add.astype(self.dtype)
    grouped = x.reshape((self.groups, -1) + x.shape[1:])
    return (grouped * mul.astype(self.dtype) + add.astype(self.dtype)).reshape(x.shape)


class Bottleneck(nn.Module):
  width: int
  stride: int
  downsample: bool
  dtype: jnp.dtype = jnp.float32
  bn_groups: int = 1
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = lambda f, k, s, p, name: nn.Conv(
      f,
      (k, k),
      (s, s),
      padding=((p, p), (p, p)),
      use_bias=False,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=conv_init,
      name=name,
    )
    norm = lambda name: BatchNorm(dtype=self.dtype, groups=self.bn_groups, name=name)
    out = nn.relu(norm("bn1")(conv(self.width, 1, 1, 0, "conv1")(x), train))
    out = nn.relu(norm("bn2")(conv(self.width, 3, self.stride, 1, "conv2")(out), train))
    out = norm("bn3")(conv(self.width * self.expansion, 1, 1, 0, "conv3")(out), train)
    if self.downsample:
      x = norm("downsample_bn")(conv(self.width * self.expansion, 1, self.stride, 0, "downsample_conv")(x), train)
    return nn.relu(out + x)


class ResNet(nn.Module):
  """torchvision ResNet with bottleneck blocks; `stage_sizes=(3, 4, 6, 3), num_filters=64` is ResNet-50.

  Smaller `stage_sizes` / `num_filters` give the tiny networks the tests train (same module, same code).
  Input: NHWC images; output: float32 logits (float64 when `dtype` is float64, which the equivalence
  tests use to compare the math with PyTorch without float32 rounding). `bn_groups`: see BatchNorm.groups.
  """

  num_classes: int = 1000
  stage_sizes: Sequence[int] = RESNET50_STAGE_SIZES
  num_filters: int = 64
  dtype: jnp.dtype = jnp.float32
  bn_groups: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.astype(self.dtype)
    x = nn.Conv(
      self.num_filters,
      (7, 7),
      (2, 2),
      padding=((3, 3), (3, 3)),
      use_bias=False,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=conv_init,
      name="conv1",
    )(x)
    x = nn.relu(BatchNorm(dtype=self.dtype, groups=self.bn_groups, name="bn1")(x, train))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    in_features = self.num_filters
    for stage, num_blocks in enumerate(self.stage_sizes):
      width = self.num_filters * 2**stage
      for block in range(num_blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        downsample = block == 0 and (stride != 1 or in_features != width * Bottleneck.expansion)
        x = Bottleneck(
          width, stride, downsample, dtype=self.dtype, bn_groups=self.bn_groups, name=f"layer{stage + 1}_{block}"
        )(x, train)
        in_features = width * Bottleneck.expansion
    x = jnp.mean(x.astype(jnp.promote_types(self.dtype, jnp.float32)), axis=(1, 2))
    return nn.Dense(
      self.num_classes, param_dtype=jnp.float32, kernel_init=fc_kernel_init, bias_init=fc_bias_init(in_features), name="fc"
    )(x)


def resnet50(num_classes: int = 1000, dtype: jnp.dtype = jnp.float32) -> ResNet:
  return ResNet(num_classes=num_classes, dtype=dtype)


BATCH_NORM_STATISTICS = ("global", "per_device")


def build_model(config, num_classes: int, num_devices: int = 1) -> ResNet:
  """The network a `configs/base/classifier.py` model block describes, with `num_classes` outputs;
  `num_devices` (the training mesh's size) sets the groups of `batch_norm="per_device"`."""
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if config.dtype not in dtypes:
    raise ValueError(f"model.dtype must be one of {sorted(dtypes)}, got {config.dtype!r}")
  if config.batch_norm not in BATCH_NORM_STATISTICS:
    raise ValueError(f"model.batch_norm must be one of {BATCH_NORM_STATISTICS}, got {config.batch_norm!r}")
  return ResNet(
    num_classes=num_classes,
    stage_sizes=tuple(config.stage_sizes),
    num_filters=config.num_filters,
    dtype=dtypes[config.dtype],
    bn_groups=num_devices if config.batch_norm == "per_device" else 1,
  )
