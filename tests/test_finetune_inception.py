"""Flax Inception-v3 pool features equal torchvision's `inception_v3` on the same random weights."""

import jax
import numpy as np
import pytest
import torch
import torchvision

from jax_aug.finetune import inception


def _torch_model(seed=0):
  torch.manual_seed(seed)
  model = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=True).eval()
  # Non-trivial BN statistics, so the port of running mean/var is actually exercised.
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  return model


def _torch_pool_features(model, x_nchw):
  captured = {}
  hook = model.avgpool.register_forward_hook(lambda m, i, o: captured.setdefault("f", o.flatten(1)))
  with torch.no_grad():
    model(x_nchw)
  hook.remove()
  return captured["f"].numpy()


@pytest.fixture(scope="module")
def ported():
  model = _torch_model()
  return model, inception.variables_from_torchvision(model.state_dict())


@pytest.mark.parametrize("size,batch", [(75, 2), (299, 1)])
def test_pool_features_match_torchvision(ported, size, batch):
  model, variables = ported
  x = np.random.default_rng(size).normal(size=(batch, size, size, 3)).astype(np.float32)
  expected = _torch_pool_features(model, torch.from_numpy(x.transpose(0, 3, 1, 2)))
  got = jax.jit(inception.InceptionV3Features().apply)(variables, x)
  assert got.shape == (batch, inception.FEATURE_DIM)
  # float32 through ~95 conv layers: agreement to 1e-4 relative to the feature scale.
  np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-4 * np.abs(expected).max())
  # Negative controls, each on torchvision's side of the same weights and input: without transform_input
  # (~1e4x the tolerance), and BatchNorm eps 1e-5 instead of BasicConv2d's 1e-3 (~260x).
  batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  try:
    model.transform_input = False
    no_transform_input = _torch_pool_features(model, torch.from_numpy(x.transpose(0, 3, 1, 2)))
    model.transform_input = True
    for m in batch_norms:
      m.eps = 1e-5
    wrong_eps = _torch_pool_features(model, torch.from_numpy(x.transpose(0, 3, 1, 2)))
  finally:  # the model is shared by the module's other tests
    model.transform_input = True
    for m in batch_norms:
      m.eps = 1e-3
  for buggy in (no_transform_input, wrong_eps):
    assert np.abs(np.asarray(got) - buggy).max() > 100 * 1e-4 * np.abs(expected).max()


def test_weight_files_round_trip_without_pickle(ported, tmp_path):
  model, variables = ported
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  np.savez(tmp_path / "w.npz", **state)
  from safetensors.numpy import save_file

  save_file(state, str(tmp_path / "w.safetensors"))
  torch.save(model.state_dict(), tmp_path / "w.pth")
  for name in ("w.npz", "w.safetensors", "w.pth"):
    loaded = inception.variables_from_torchvision(inception.load_torchvision_state_dict(tmp_path / name))
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)


def test_bad_weights_and_inputs_are_named(ported, tmp_path):
  model, variables = ported
  state = dict(model.state_dict())
  del state["Mixed_7c.branch_pool.conv.weight"]
  with pytest.raises(KeyError, match="Mixed_7c.branch_pool.conv.kernel"):
    inception.variables_from_torchvision(state)
  state = dict(model.state_dict())
  state["Mixed_5b.branch1x1.conv.weight"] = torch.zeros(64, 192, 3, 3)
  with pytest.raises(ValueError, match="Mixed_5b.branch1x1.conv.weight: shape"):
    inception.variables_from_torchvision(state)
  with pytest.raises(ValueError, match="unsupported Inception-v3 weight format '.bin'"):
    (tmp_path / "w.bin").write_bytes(b"x")
    inception.load_torchvision_state_dict(tmp_path / "w.bin")
  with pytest.raises(ValueError, match="at least 75x75"):
    inception.InceptionV3Features().apply(variables, np.zeros((1, 64, 64, 3), np.float32))
