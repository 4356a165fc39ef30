"""Each jax 0.10 repair in jax_aug.diffusion.compat, exercised through the diffusers code path that
broke, against an independent reference (PyTorch diffusers, numpy, hand-computed values)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_aug.diffusion  # noqa: F401  (applies the repairs)


def test_safety_checker_cosine_and_flagging_run():
  from diffusers.pipelines.stable_diffusion import safety_checker_flax
  from transformers import CLIPConfig

  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(3, 8)), rng.normal(size=(5, 8))
  expected = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
  got = safety_checker_flax.jax_cosine_distance(jnp.asarray(a), jnp.asarray(b))
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)
  # Negative control: normalising b's columns instead of its rows (norm over the wrong axis) is caught.
  wrong_axis = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=0, keepdims=True)).T
  assert np.abs(wrong_axis - np.asarray(got)).max() > 100 * (1e-6 + 1e-5 * np.abs(expected).max())

  config = CLIPConfig(
    text_config=dict(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2),
    vision_config=dict(
      hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2, image_size=224, patch_size=56
    ),
    projection_dim=8,
  )
  checker = safety_checker_flax.FlaxStableDiffusionSafetyChecker(config, seed=0)
  images = jnp.asarray(rng.normal(size=(2, 3, 224, 224)), jnp.float32)
  embeds = checker.module.apply(
    {"params": checker.params},
    jnp.transpose(images, (0, 2, 3, 1)),
    method=lambda m, x: m.visual_projection(m.vision_model(x)[1]),
  )

  def flags(direction):
    # One concept along +-(first image's embedding) with threshold 0.5: cosine ~ +1 flags, ~ -1 not.
    params = dict(checker.params)
    params["concept_embeds"] = params["concept_embeds"].at[:].set(direction * embeds[0])
    params["concept_embeds_weights"] = params["concept_embeds_weights"].at[:].set(0.5)
    return np.asarray(checker(images, params=params)).tolist()

  cos = np.asarray(safety_checker_flax.jax_cosine_distance(embeds, embeds[:1]))
  assert (cos > 0.5).all()  # tiny random CLIP towers map both noise images to similar embeddings
  assert flags(1.0) == [True, True]
  assert flags(-1.0) == [False, False]


def test_ddpm_variance_and_step_match_pytorch():
  import torch
  from diffusers import DDPMScheduler, FlaxDDPMScheduler

  # Flax's DDPM always steps t -> t-1; PyTorch does too when no inference schedule is set.
  pt_scheduler = DDPMScheduler(variance_type="fixed_small")
  for variance_type in ("fixed_small", "fixed_small_log"):
    flax_scheduler = FlaxDDPMScheduler(variance_type=variance_type)
    state = flax_scheduler.create_state()
    for t in (0, 1, 500, 999):
      got = float(flax_scheduler._get_variance(state, jnp.asarray(t)))
      want = max(float(pt_scheduler._get_variance(t)), 1e-20)
      # PyTorch's "fixed_small_log" returns a standard deviation; Flax's the log variance.
      want = np.log(want) if variance_type == "fixed_small_log" else want
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-30)  # float32 cumprods near t=0
      if variance_type == "fixed_small" and t == 1:
        # Negative control: beta_t ("fixed_large", no posterior factor) instead of the posterior variance.
        assert abs(float(pt_scheduler._get_variance(t, variance_type="fixed_large")) - got) > 100 * 1e-4 * got

  flax_scheduler = FlaxDDPMScheduler(variance_type="fixed_small")
  state = flax_scheduler.create_state()
  # At t=0 the step adds no noise, so it is deterministic and must equal PyTorch's.
  rng = np.random.default_rng(1)
  sample, eps = rng.normal(size=(2, 4, 8, 8)), rng.normal(size=(2, 4, 8, 8))
  got = flax_scheduler.step(
    state, jnp.asarray(eps, jnp.float32), 0, jnp.asarray(sample, jnp.float32), key=jax.random.key(0)
  ).prev_sample
  want = pt_scheduler.step(torch.tensor(eps, dtype=torch.float32), 0, torch.tensor(sample, dtype=torch.float32)).prev_sample
  # PyTorch derives beta_0 as 1 - alpha_prod_0 (float32 cancellation, ~6e-4 relative), Flax reads it.
  np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-3, atol=1e-5)
  # Negative control: clipping the predicted x0 at the wrong bound (+-1.5 instead of +-1) is caught.
  wrong_clip = (
    DDPMScheduler(variance_type="fixed_small", clip_sample_range=1.5)
    .step(torch.tensor(eps, dtype=torch.float32), 0, torch.tensor(sample, dtype=torch.float32))
    .prev_sample.numpy()
  )
  assert np.abs(wrong_clip - np.asarray(got)).max() > 100 * (1e-5 + 1e-3 * np.abs(want.numpy()).max())
  noisy = flax_scheduler.step(
    state, jnp.asarray(eps, jnp.float32), 500, jnp.asarray(sample, jnp.float32), key=jax.random.key(0)
  ).prev_sample
  assert np.isfinite(np.asarray(noisy)).all()


def test_model_casts_with_and_without_mask():
  from diffusers import FlaxAutoencoderKL

  vae = FlaxAutoencoderKL(
    block_out_channels=(32,),
    down_block_types=("DownEncoderBlock2D",),
    up_block_types=("UpDecoderBlock2D",),
    layers_per_block=1,
    sample_size=8,
  )
  params = vae.init_weights(jax.random.key(0))
  leaves = jax.tree.leaves(params)
  bf16 = vae.to_bf16(params)
  assert {x.dtype for x in jax.tree.leaves(bf16)} == {jnp.dtype(jnp.bfloat16)}
  fp16 = vae.to_fp16(params)
  assert {x.dtype for x in jax.tree.leaves(fp16)} == {jnp.dtype(jnp.float16)}
  back = vae.to_fp32(bf16)
  assert {x.dtype for x in jax.tree.leaves(back)} == {jnp.dtype(jnp.float32)}
  for orig, cast in zip(leaves, jax.tree.leaves(back)):
    np.testing.assert_allclose(np.asarray(cast), np.asarray(orig), rtol=2**-8)
  # Negative control: a round trip through the wrong dtype (float8, 3 mantissa bits) exceeds that tolerance.
  kernel = np.asarray(params["encoder"]["conv_in"]["kernel"])
  wrong_cast = np.asarray(jnp.asarray(kernel).astype(jnp.float8_e4m3fn).astype(jnp.float32))
  assert np.max(np.abs(wrong_cast - kernel) / np.abs(kernel)) > 4 * 2**-8
  from flax.traverse_util import flatten_dict, unflatten_dict

  flat = flatten_dict(params)
  mask = unflatten_dict({k: k[-1] == "kernel" for k in flat})
  masked = flatten_dict(vae.to_bf16(params, mask=mask))
  for k, v in masked.items():
    assert v.dtype == (jnp.bfloat16 if k[-1] == "kernel" else jnp.float32), k


def test_pinned_flax_classes_deprecation_notices_are_silenced_and_nothing_else():
  import io
  import logging

  from diffusers import FlaxDDIMScheduler
  from diffusers.utils import logging as diffusers_logging
  from transformers.utils import logging as transformers_logging

  # The libraries' own terminal handlers (not pytest's), written into a buffer for the test (they hold the
  # stderr of import time).
  handlers = [
    h
    for logger in (diffusers_logging.get_logger(), transformers_logging.get_logger())
    for h in logger.handlers
    if type(h) is logging.StreamHandler
  ]
  assert len(handlers) == 2
  buffer = io.StringIO()
  streams = [handler.setStream(buffer) for handler in handlers]
  try:
    FlaxDDIMScheduler()  # diffusers logs its Flax deprecation notice in every Flax class's constructor
    transformers_logging.get_logger("transformers.modeling_flax_utils").warning(
      "TensorFlow and JAX classes are deprecated and will be removed in Transformers v5. We recommend ..."
    )
    assert buffer.getvalue() == ""
    # Negative control: any other warning of either library still reaches the terminal.
    diffusers_logging.get_logger("diffusers.schedulers").warning("a different diffusers warning")
    transformers_logging.get_logger("transformers.models").warning("a different transformers warning")
    assert buffer.getvalue() == "a different diffusers warning\na different transformers warning\n"
  finally:
    for handler, stream in zip(handlers, streams):
      handler.setStream(stream)


def test_pytorch_conversion_reads_shapes_only_and_gives_diffusers_weights(tmp_path, monkeypatch):
  """from_pretrained(from_pt=True) through the repaired conversion: init_weights only ever traced, never run on
  arrays (at SD v1.4's size that eager forward pass cost minutes on a CPU); a VAE's weights bit-equal to diffusers'
  own conversion's (same names); the tiny SD U-Net's in the layout PyTorch's tensors map to."""
  import torch
  from diffusers import AutoencoderKL, FlaxAutoencoderKL, FlaxUNet2DConditionModel, UNet2DConditionModel
  from diffusers.models import modeling_flax_pytorch_utils
  from flax.traverse_util import flatten_dict

  from jax_aug.diffusion import tiny

  eager_inits = []
  for cls in (FlaxUNet2DConditionModel, FlaxAutoencoderKL):

    def spying_init(self, rng, *args, _original=cls.init_weights, **kwargs):
      if not isinstance(rng, jax.core.Tracer):
        eager_inits.append(type(self).__name__)
      return _original(self, rng, *args, **kwargs)

    monkeypatch.setattr(cls, "init_weights", spying_init)

  torch.manual_seed(0)
  # One level: diffusers' own (eager) conversion of it, the reference, costs seconds rather than a minute.
  AutoencoderKL(
    block_out_channels=(32,),
    down_block_types=("DownEncoderBlock2D",),
    up_block_types=("UpDecoderBlock2D",),
    layers_per_block=1,
    sample_size=8,
  ).save_pretrained(tmp_path / "vae", safe_serialization=False)
  model, params = FlaxAutoencoderKL.from_pretrained(tmp_path / "vae", from_pt=True)
  assert eager_inits == []
  pt_state = torch.load(tmp_path / "vae" / "diffusion_pytorch_model.bin", weights_only=True)
  reference = flatten_dict(modeling_flax_pytorch_utils.convert_pytorch_state_dict_to_flax(pt_state, model))
  assert eager_inits == ["FlaxAutoencoderKL"]  # the spy sees diffusers' eager init when there is one
  ours = flatten_dict(params)
  assert ours.keys() == reference.keys()
  for key, value in reference.items():
    np.testing.assert_array_equal(np.asarray(ours[key]), np.asarray(value), err_msg=str(key))

  eager_inits.clear()
  UNet2DConditionModel(**tiny.UNET_CONFIG).save_pretrained(tmp_path / "unet", safe_serialization=False)
  model, params = FlaxUNet2DConditionModel.from_pretrained(tmp_path / "unet", from_pt=True)
  assert eager_inits == []
  pt_state = torch.load(tmp_path / "unet" / "diffusion_pytorch_model.bin", weights_only=True)
  ours = flatten_dict(params)
  shapes = flatten_dict(jax.eval_shape(model.init_weights, jax.random.key(0)))
  assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in shapes.items()}
  # A convolution is (out, in, h, w) in PyTorch and (h, w, in, out) in Flax; a linear layer transposed.
  np.testing.assert_array_equal(
    np.asarray(ours[("conv_in", "kernel")]), pt_state["conv_in.weight"].numpy().transpose(2, 3, 1, 0)
  )
  attention = ("down_blocks_0", "attentions_0", "transformer_blocks_0", "attn1", "to_q", "kernel")
  np.testing.assert_array_equal(
    np.asarray(ours[attention]), pt_state["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"].numpy().T
  )


def _attention_layer_and_torch_reference(dtype):
  """A FlaxAttention (SD's layout: 4 heads of 16) with random weights, inputs for self- and cross-attention, and
  PyTorch's scaled_dot_product_attention (what diffusers' PyTorch pipeline runs) on the same weights in float32."""
  import torch
  from diffusers.models.attention_flax import FlaxAttention

  layer = FlaxAttention(query_dim=64, heads=4, dim_head=16, dtype=dtype)
  hidden = jax.random.normal(jax.random.key(0), (2, 48, 64))
  context = jax.random.normal(jax.random.key(1), (2, 77, 64))
  params = layer.init(jax.random.key(2), hidden, context)

  def reference(context_or_none):
    p = jax.tree.map(lambda a: torch.from_numpy(np.array(a, np.float32)), params["params"])
    x = torch.from_numpy(np.array(hidden))
    c = x if context_or_none is None else torch.from_numpy(np.array(context_or_none))

    def heads(t):
      return t.reshape(2, -1, 4, 16).transpose(1, 2)

    q, k, v = heads(x @ p["to_q"]["kernel"]), heads(c @ p["to_k"]["kernel"]), heads(c @ p["to_v"]["kernel"])
    attended = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, -1, 64)
    return (attended @ p["to_out_0"]["kernel"] + p["to_out_0"]["bias"]).numpy()

  return layer, params, hidden, context, reference


def test_fused_attention_matches_pytorch_sdpa_and_diffusers():
  from jax_aug.diffusion import compat

  for dtype, tolerance in ((jnp.float32, 2e-5), (jnp.bfloat16, 6e-2)):
    layer, params, hidden, context, reference = _attention_layer_and_torch_reference(dtype)
    for ctx in (None, context):  # self-attention, cross-attention over 77 text states
      fused = layer.apply(params, hidden, ctx, method=lambda m, h, c: compat.fused_attention(m, h, c, "xla"))
      expected = reference(ctx)
      np.testing.assert_allclose(np.asarray(fused, np.float32), expected, atol=tolerance, rtol=tolerance)
      diffusers = layer.apply(params, hidden, ctx, method=compat._DIFFUSERS_ATTENTION_CALL)
      np.testing.assert_allclose(np.asarray(diffusers, np.float32), expected, atol=tolerance, rtol=tolerance)
  # Negative control: the keys taken from the hidden states instead of the text (cross-attention) are caught.
  layer, params, hidden, context, reference = _attention_layer_and_torch_reference(jnp.float32)
  assert np.abs(reference(None) - reference(context)).max() > 100 * 2e-5


def test_cudnn_attention_is_tried_only_on_cuda_in_half_precision():
  from jax_aug.diffusion import compat

  assert compat.cudnn_attention_applies("cuda 13000", jnp.bfloat16)
  assert compat.cudnn_attention_applies("CUDA 12090", jnp.float16)
  assert not compat.cudnn_attention_applies("cuda 13000", jnp.float32)  # cuDNN's kernel: bf16/fp16 only
  assert not compat.cudnn_attention_applies("cpu", jnp.bfloat16)
  assert not compat.cudnn_attention_applies("rocm 6.4", jnp.bfloat16)  # no cuDNN on ROCm


def _stand_in_for_cudnn(monkeypatch) -> None:
  """jax.nn.dot_product_attention with implementation="cudnn" stood in for (a CPU has no cuDNN): jax's XLA math
  behind the rule jax 0.11.2's cuDNN path applied on an H100 (2026-11-27): its forward rule, run only when the
  call is differentiated, refuses an odd key length ("Unsupported sequence length Q 4096, KV 77.")."""
  xla_attention = jax.nn.dot_product_attention

  def dot_product_attention(query, key, value, *, scale=None, implementation=None):
    def xla(q, k, v):
      return xla_attention(q, k, v, scale=scale, implementation="xla")

    if implementation != "cudnn":
      return xla(query, key, value)

    @jax.custom_vjp
    def cudnn(q, k, v):
      return xla(q, k, v)

    def forward_rule(q, k, v):
      if k.shape[1] % 2:
        raise NotImplementedError(f"Unsupported sequence length Q {q.shape[1]}, KV {k.shape[1]}.")
      return xla(q, k, v), (q, k, v)

    def backward_rule(residuals, cotangent):
      return jax.vjp(xla, *residuals)[1](cotangent)

    cudnn.defvjp(forward_rule, backward_rule)
    return cudnn(query, key, value)

  monkeypatch.setattr(jax.nn, "dot_product_attention", dot_product_attention)


def test_attention_call_routes_through_cudnn_or_falls_back_to_diffusers(monkeypatch):
  """FlaxAttention's patched __call__: on CPU diffusers' own math bit for bit; where cuDNN applies, the fused
  path for a layer cuDNN accepts forward and backward (self-attention over 48 positions), diffusers' own for one
  it refuses in training (cross-attention to 77 states), also when the layer is differentiated inside a
  rematerialised block, where a guard around the call could not catch the refusal (negative control below)."""
  from jax_aug.diffusion import compat

  layer, params, hidden, context, _ = _attention_layer_and_torch_reference(jnp.bfloat16)

  def run(ctx, method=None, remat=False):
    """The layer's output and d sum(output^2) / d hidden, the layer inside jax.checkpoint when `remat`."""

    def forward(h):
      return layer.apply(params, h, ctx) if method is None else layer.apply(params, h, ctx, method=method)

    block = jax.checkpoint(forward) if remat else forward
    grad = jax.grad(lambda h: jnp.sum(block(h).astype(jnp.float32) ** 2))(hidden)
    return np.asarray(forward(hidden), np.float32), np.asarray(grad, np.float32)

  def fused(m, h, c):
    return compat.fused_attention(m, h, c, "xla")

  for ctx in (None, context):
    diffusers, fused_xla = run(ctx, compat._DIFFUSERS_ATTENTION_CALL), run(ctx, fused)
    assert np.abs(diffusers[0] - fused_xla[0]).max() > 0  # the paths are told apart (bf16 scores vs f32 logits)
    for got, want in zip(run(ctx), diffusers, strict=True):  # CPU: diffusers' own
      np.testing.assert_array_equal(got, want)

  _stand_in_for_cudnn(monkeypatch)
  monkeypatch.setattr(compat, "cudnn_attention_applies", lambda platform_version, dtype: True)
  assert compat.cudnn_accepts((2, 48, 4, 16), (2, 48, 4, 16), jnp.bfloat16)
  assert not compat.cudnn_accepts((2, 48, 4, 16), (2, 77, 4, 16), jnp.bfloat16)
  for remat in (False, True):
    for got, want in zip(run(None, remat=remat), run(None, fused), strict=True):  # accepted: the fused path
      np.testing.assert_array_equal(got, want)
    for got, want in zip(run(context, remat=remat), run(context, compat._DIFFUSERS_ATTENTION_CALL), strict=True):
      np.testing.assert_array_equal(got, want)  # refused in training: diffusers' own, remat or not

  # Negative control: the cuDNN call with only a guard around it, differentiated inside a rematerialised block,
  # raises outside the guard (the forward rule runs when jax.checkpoint's block is differentiated).
  def guarded(m, h, c):
    try:
      return compat.fused_attention(m, h, c, "cudnn")
    except NotImplementedError:
      return compat._DIFFUSERS_ATTENTION_CALL(m, h, c)

  run(context, guarded)  # without remat the guard catches it
  with pytest.raises(NotImplementedError, match="KV 77"):
    run(context, guarded, remat=True)
