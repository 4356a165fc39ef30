"""The Flax ResNet-50 against torchvision's resnet50 with ported weights (float32, CPU).

Tolerance: each compared tensor must satisfy max|ours - torch| <= 1e-4 * max|torch| (relative to the
tensor's scale, so near-zero entries of a gradient do not turn rounding noise into huge ratios).
Forward passes are compared in float32; gradients and SGD steps in float64 (see below for why).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from jax_aug.classifier import port, steps
from jax_aug.classifier.model import resnet50

NUM_CLASSES = 10
IMAGE_SIZE = 64
BATCH = 4
RTOL = 1e-4


def assert_close(ours, ref, what, rtol=RTOL):
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
  scale = max(np.abs(ref).max(), 1e-12)
  err = np.abs(ours - ref).max()
  assert err <= rtol * scale, f"{what}: max abs error {err:.3g} > {rtol} * {scale:.3g}"


def assert_state_dicts_close(ours: dict, ref: dict, keys=None, rtol=RTOL):
  keys = keys if keys is not None else [k for k in ref if not k.endswith("num_batches_tracked")]
  assert keys
  for key in keys:
    assert_close(ours[key], ref[key].detach().numpy() if hasattr(ref[key], "detach") else ref[key], key, rtol)


def images(seed):
  rng = np.random.RandomState(seed)
  x = rng.randn(BATCH, IMAGE_SIZE, IMAGE_SIZE, 3).astype(np.float32)
  y = rng.randint(0, NUM_CLASSES, BATCH).astype(np.int32)
  return x, y


def to_torch(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def random_torch_resnet50(num_classes: int) -> torch.nn.Module:
  """torchvision's ResNet-50 (seed 0) with non-trivial BN running statistics and affine parameters, so eval
  mode tests the port of all four."""
  torch.manual_seed(0)
  model = torchvision.models.resnet50(num_classes=num_classes)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  return model


@pytest.fixture(scope="module")
def torch_model():
  return random_torch_resnet50(NUM_CLASSES)


def test_eval_logits_match(torch_model):
  x, _ = images(0)
  torch_model.eval()
  with torch.no_grad():
    ref = torch_model(to_torch(x)).numpy()
  variables = jax.tree.map(jnp.asarray, port.torch_to_flax(torch_model.state_dict()))
  ours = resnet50(NUM_CLASSES).apply(variables, x, train=False)
  assert_close(ours, ref, "eval logits")


def test_train_mode_logits_running_stats_and_loss_match(torch_model):
  x, y = images(1)
  model_t = fresh_copy(torch_model).train()
  variables = jax.tree.map(jnp.asarray, port.torch_to_flax(model_t.state_dict()))
  logits_t = model_t(to_torch(x))
  loss_t = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(y).long())

  loss, (logits, new_stats) = steps.loss_and_updates(
    resnet50(NUM_CLASSES), variables["params"], variables["batch_stats"], x, y
  )
  assert_close(logits, logits_t.detach().numpy(), "train-mode logits")
  assert_close(loss, loss_t.item(), "loss")
  ours = port.flax_to_torch({"params": variables["params"], "batch_stats": new_stats})
  running = [k for k in ours if "running_" in k]
  assert_state_dicts_close(ours, model_t.state_dict(), running)
  # Negative control: flax's momentum convention read as torch's (batch weight 0.01 instead of 0.1, so a
  # tenth of torch's update from the stats before the step) misses the tolerance by far on every running stat.
  before = torch_model.state_dict()
  margins = []
  for k in running:
    ref = model_t.state_dict()[k].numpy()
    buggy = before[k].numpy() + (ref - before[k].numpy()) / 10
    margins.append(np.abs(ours[k] - buggy).max() / (RTOL * np.abs(ref).max()))
  assert min(margins) > 100, min(margins)


def fresh_copy(torch_model, dtype=torch.float32):
  model = torchvision.models.resnet50(num_classes=NUM_CLASSES)
  model.load_state_dict(torch_model.state_dict())
  return model.to(dtype)


# Gradients of a randomly initialised ResNet-50 in train mode are ill-conditioned: near-constant BN
# channels (tiny batch variance) amplify rounding, so PyTorch's own float32 gradients differ from its
# float64 ones by 20-40% on some tensors (measured here at batch 4-16, 64-128 px). No float32
# implementation can agree with another to 1e-4 there. The gradient and optimizer checks therefore run
# both frameworks in float64, where rounding is negligible and 1e-4 relative tests the math itself.
_FLOAT64_PROGRAM = """
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
from ml_collections import ConfigDict
from jax_aug import sharding
from jax_aug.classifier import port, steps
from jax_aug.classifier.model import ResNet

data = dict(np.load({data!r}))
state_dict = {{k[3:]: v for k, v in data.items() if k.startswith("sd.")}}
variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), port.torch_to_flax(state_dict))
model = ResNet(num_classes={num_classes}, dtype=jnp.float64)
grads = jax.jit(jax.grad(lambda p: steps.loss_and_updates(
    model, p, variables["batch_stats"], data["x0"], data["y0"])[0]))(variables["params"])
out = {{"grad." + k: v for k, v in port.flax_to_torch(
    {{"params": grads, "batch_stats": variables["batch_stats"]}}).items()}}

config = ConfigDict(dict(learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4,
                         weight_decay_applies_to="all"))
tx, mesh = steps.make_optimizer(config), sharding.make_mesh()
state = sharding.replicate(steps.TrainState(
    step=jnp.zeros((), jnp.int32), params=variables["params"], batch_stats=variables["batch_stats"],
    opt_state=tx.init(variables["params"])), mesh)
step = steps.jit_train_step(model, tx, mesh)
for i in range(1, 4):
  batch = {{"image": data[f"x{{i}}"], "label": data[f"y{{i}}"]}}
  state, _ = step(state, sharding.global_batch(batch, mesh))
out.update({{"sgd." + k: v for k, v in port.flax_to_torch(jax.device_get(state.variables())).items()}})
np.savez({result!r}, **out)
emit({{"steps": int(state.step)}})
"""


@pytest.mark.slow
def test_gradients_and_three_sgd_steps_match_torch_in_float64(torch_model, run_jax, tmp_path):
  """Grads of the loss, then 3 SGD steps with momentum 0.9 and weight decay 1e-4 on every parameter
  (BN and biases included) applied as torch.optim.SGD does; params and running stats compared."""
  batches = [images(20 + i) for i in range(4)]
  data = {f"sd.{k}": v.numpy() for k, v in torch_model.state_dict().items()}
  for i, (x, y) in enumerate(batches):
    data[f"x{i}"], data[f"y{i}"] = x.astype(np.float64), y
  np.savez(tmp_path / "in.npz", **data)
  result = run_jax(
    _FLOAT64_PROGRAM.format(data=str(tmp_path / "in.npz"), num_classes=NUM_CLASSES, result=str(tmp_path / "out.npz"))
  )
  assert result == {"steps": 3}
  ours = dict(np.load(tmp_path / "out.npz"))

  model_t = fresh_copy(torch_model, torch.float64).train()
  x, y = batches[0]
  torch.nn.functional.cross_entropy(model_t(to_torch(x).double()), torch.from_numpy(y).long()).backward()
  ref_grads = {k: p.grad for k, p in model_t.named_parameters()}
  assert_state_dicts_close({k[5:]: v for k, v in ours.items() if k.startswith("grad.")}, ref_grads, keys=list(ref_grads))

  model_t = fresh_copy(torch_model, torch.float64).train()
  opt_t = torch.optim.SGD(model_t.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  for x, y in batches[1:]:
    opt_t.zero_grad()
    torch.nn.functional.cross_entropy(model_t(to_torch(x).double()), torch.from_numpy(y).long()).backward()
    opt_t.step()
  assert_state_dicts_close({k[4:]: v for k, v in ours.items() if k.startswith("sgd.")}, model_t.state_dict())


def test_round_trip_flax_torch_flax_is_exact():
  # Random values in the Flax variable tree (shapes from tracing init, no compile needed).
  shapes = jax.eval_shape(resnet50(NUM_CLASSES).init, jax.random.key(3), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(3)
  variables = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
  model_t = torchvision.models.resnet50(num_classes=NUM_CLASSES)
  model_t.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in port.flax_to_torch(variables).items()}, strict=True)
  back = port.torch_to_flax(model_t.state_dict())
  flat, flat_back = (dict(jax.tree_util.tree_flatten_with_path(v)[0]) for v in (variables, back))
  assert flat.keys() == flat_back.keys()
  for path, value in flat.items():
    np.testing.assert_array_equal(flat_back[path], value, err_msg=jax.tree_util.keystr(path))


def test_port_rejects_a_non_resnet_state_dict():
  with pytest.raises(KeyError, match="features.0.weight"):
    port.torch_to_flax({"features.0.weight": np.zeros((3,))})
