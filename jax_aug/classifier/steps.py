"""The pure pieces of training: optimizer, train state, jitted train and eval steps over a mesh.

One `jax.jit` with NamedShardings from `jax_aug.sharding` (batch split on the data axis, state
replicated): XLA inserts the gradient all-reduce, and BatchNorm statistics are over the global batch, so
1 device, N devices and several hosts compute the same function of the global batch.

The loaders send uint8 pixels; the steps normalise them on the device (`model_input`), so the host
neither computes nor copies float32 images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jax_aug import sharding
from jax_aug.data.pipeline import normalize
from jax_aug.metrics import global_norms


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  def variables(self) -> dict:
    return {"params": self.params, "batch_stats": self.batch_stats}


def weight_decay_mask(params: Any, applies_to: str) -> Any:
  """ "all": every parameter, as torch.optim.SGD(weight_decay=...) does (BN scale/bias and fc bias too);
  "kernels": conv and fc kernels only (the common "no decay on BN and biases" variant)."""
  if applies_to == "all":
    return jax.tree.map(lambda _: True, params)
  if applies_to == "kernels":
    return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) == "kernel", params)
  raise ValueError(f"optimizer.weight_decay_applies_to must be 'all' or 'kernels', got {applies_to!r}")


def make_optimizer(config) -> optax.GradientTransformation:
  """SGD exactly as torch.optim.SGD: g += wd * p (coupled), buf = momentum * buf + g, p -= lr * buf.

  The learning rate is a hyperparameter in the optimizer state (inject_hyperparams) because the plateau
  schedule changes it from outside the jitted step, between epochs.
  """

  def sgd(learning_rate):
    return optax.chain(
      optax.masked(
        optax.add_decayed_weights(config.weight_decay), lambda p: weight_decay_mask(p, config.weight_decay_applies_to)
      ),
      optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.nesterov),
    )

  return optax.inject_hyperparams(sgd)(learning_rate=config.learning_rate)


def set_learning_rate(state: TrainState, learning_rate: float) -> TrainState:
  hyperparams = dict(state.opt_state.hyperparams)
  hyperparams["learning_rate"] = jnp.asarray(learning_rate, hyperparams["learning_rate"].dtype)
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))


def get_learning_rate(state: TrainState) -> float:
  return float(state.opt_state.hyperparams["learning_rate"])


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, image_size: int) -> TrainState:
  variables = model.init(key, jnp.zeros((1, image_size, image_size, 3), jnp.float32), train=False)
  params, batch_stats = variables["params"], variables["batch_stats"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, opt_state=tx.init(params))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross entropy, torch.nn.CrossEntropyLoss's default."""
  return optax.softmax_cross_entropy_with_integer_labels(
    logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), labels
  ).mean()


def model_input(images: jax.Array) -> jax.Array:
  """uint8 pixels (the loaders' batches) normalised with torchvision's ImageNet mean/std; float images
  are taken as already normalised (the PyTorch-equivalence tests feed those)."""
  return normalize(images) if images.dtype == jnp.uint8 else images


def loss_and_updates(model: nn.Module, params, batch_stats, images, labels):
  """(loss, (logits, new batch_stats)) of one train-mode forward pass."""
  logits, mutated = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"])
  return cross_entropy(logits, labels), (logits, mutated["batch_stats"])


def train_step(
  state: TrainState, batch: dict, *, model: nn.Module, tx: optax.GradientTransformation
) -> tuple[TrainState, dict]:
  """One SGD step; metrics: the loss, the number of correct predictions and the step's global norms
  (jax_aug.metrics.global_norms: extra outputs, the parameters and the loss are computed as without them)."""
  grad_fn = jax.value_and_grad(
    lambda p: loss_and_updates(model, p, state.batch_stats, model_input(batch["image"]), batch["label"]), has_aux=True
  )
  (loss, (logits, batch_stats)), grads = grad_fn(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
    "loss": loss,
    "correct": jnp.sum(jnp.argmax(logits, -1) == batch["label"]),
    **global_norms(grads, updates, params),
  }
  return TrainState(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state), metrics


def eval_step(variables: dict, batch: dict, *, model: nn.Module, num_classes: int) -> dict:
  """Per-class counts of correct top-1 predictions and of images; padded rows (mask 0) count nothing."""
  logits = model.apply(variables, model_input(batch["image"]), train=False)
  mask = batch.get("mask", jnp.ones_like(batch["label"])).astype(jnp.int32)
  correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.int32) * mask
  one_hot = jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.int32)
  return {"correct": correct @ one_hot, "count": mask @ one_hot}


def state_shardings(
  model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh, image_size: int, parameter_sharding: str = "replicated"
) -> TrainState:
  """The train state's layout (a TrainState of NamedShardings): config.parameter_sharding's rule of
  jax_aug.sharding ("replicated" or "fsdp") applied to its parameters, batch statistics and optimizer state."""
  shapes = jax.eval_shape(lambda key: create_train_state(model, tx, key, image_size), jax.random.key(0))
  return sharding.state_shardings(shapes, mesh, parameter_sharding)


def jit_train_step(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh, state_sharding: Any = None) -> Callable:
  """`state_sharding`: a TrainState of shardings (state_shardings); None replicates the state."""
  replicated, data = sharding.replicated_sharding(mesh), sharding.data_sharding(mesh)
  state_sharding = replicated if state_sharding is None else state_sharding
  return jax.jit(
    lambda s, b: train_step(s, b, model=model, tx=tx),
    in_shardings=(state_sharding, data),
    out_shardings=(state_sharding, replicated),
    donate_argnums=0,
  )


def jit_eval_step(model: nn.Module, num_classes: int, mesh: Mesh, state_sharding: Any = None) -> Callable:
  """The variables are laid out as the train state's (`state_sharding`, None: replicated)."""
  replicated, data = sharding.replicated_sharding(mesh), sharding.data_sharding(mesh)
  variables = replicated if state_sharding is None else state_sharding.variables()
  return jax.jit(
    lambda v, b: eval_step(v, b, model=model, num_classes=num_classes),
    in_shardings=(variables, data),
    out_shardings=replicated,
  )
