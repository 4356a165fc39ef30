"""What a fine-tuned method trains: a conditioning kind (a module of this package) and optionally the U-Net.

A method's `config.finetune.trainables` block (configs/methods/<method>.py):

  conditioning        the kind, looked up by name as the module `jax_aug.finetune.trainables.<conditioning>`:
                      "tensor" (tensor.py): learned encoder hidden states [77, hidden], one per (class,
                      cluster), initialized from the text encoding of the class's no-ws simple prompt (5, 6, 7);
                      "pseudo_word" (pseudo_word.py): one new token embedding per class, fed through the frozen
                      CLIP text encoder inside textual-inversion templates (8, 9).
  clusters_per_class  1, or k of FT cluster conditioning (6): the subset images of a class are split by
                      k-means on Inception-v3 features, one conditioning per cluster.
  train_unet          whether the U-Net trains jointly (7 Imagic, 9 pseudo-word + DM).

The VAE and every text-encoder weight other than the new pseudo-word rows are always frozen.

A conditioning kind is one module exposing `Conditioning`, a subclass of `ConditioningKind` below: adding a
kind is adding that module (the trainer, the batches, the export and the sampler call only this interface).
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jax_aug.data.imagenet_classes import ClassInfo


class ConditioningKind(abc.ABC):
  """How a method learns the U-Net's conditioning, for the classes of one run.

  `classes` are the run's classes in label order, `tokenizer` SD's CLIP tokenizer (a kind that adds tokens
  extends a copy)."""

  group: ClassVar[str]  # its entry in the trainable tree, and its learning-rate group (config.learning_rate)

  def __init__(self, classes: Sequence[ClassInfo], clusters_per_class: int, tokenizer: Any):
    type(self).check_clusters(clusters_per_class)
    self.classes = list(classes)
    self.clusters_per_class = clusters_per_class
    self.tokenizer = tokenizer

  @classmethod
  def check_clusters(cls, clusters_per_class: int) -> None:
    if clusters_per_class < 1:
      raise ValueError(f"clusters_per_class must be >= 1, got {clusters_per_class}")

  @abc.abstractmethod
  def init(self, sd: Any) -> jax.Array:
    """The learned array at step 0 (float32), from the base model `sd`; its first axis has the same number of
    rows for every class."""

  @abc.abstractmethod
  def hidden_states_fn(self, sd: Any) -> Callable[[jax.Array, Any, dict], jax.Array]:
    """fn(learned, frozen text-encoder params, batch) -> the U-Net's cross-attention input [B, 77, hidden]
    (traced inside the train step)."""

  @abc.abstractmethod
  def batch_fields(self, examples: Sequence[Any], *, epoch: int, seed: int) -> dict[str, np.ndarray]:
    """The kind's fields of a batch of `finetune.data.Example`s (beside image, index and weight)."""

  def info(self) -> dict:
    """Fields of finetune.json the sampler needs besides the classes."""
    return {}

  @abc.abstractmethod
  def export(self, sd: Any, learned: Any) -> Any:
    """`sd` with whatever the learned array replaces (tokenizer, text encoder) swapped in."""

  @abc.abstractmethod
  def conditioning(self, learned: np.ndarray, *, label: int, cluster: int, image_index: int, seed: int) -> np.ndarray | str:
    """What image `image_index` of class `label` (in `cluster`) is sampled with: encoder hidden states
    [77, hidden] or a prompt."""


def kinds() -> list[str]:
  """The conditioning kinds: this package's public modules."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def conditioning_kind(name: str) -> type[ConditioningKind]:
  if name not in kinds():
    raise ValueError(f"unknown conditioning {name!r}: expected one of {kinds()} (modules of jax_aug/finetune/trainables)")
  return importlib.import_module(f"{__name__}.{name}").Conditioning


def build(name: str, classes: Sequence[ClassInfo], *, clusters_per_class: int, tokenizer: Any) -> ConditioningKind:
  """The conditioning kind `name` for a run over `classes`."""
  return conditioning_kind(name)(classes, clusters_per_class, tokenizer)


@dataclasses.dataclass(frozen=True)
class Trainables:
  """A method's `config.finetune.trainables` block."""

  conditioning: str
  clusters_per_class: int
  train_unet: bool

  def __post_init__(self):
    conditioning_kind(self.conditioning).check_clusters(self.clusters_per_class)

  @property
  def trainable_groups(self) -> tuple[str, ...]:
    """The trainable parts, each with its own learning rate (the keys of `initial_trainable`)."""
    return (conditioning_kind(self.conditioning).group,) + (("unet",) if self.train_unet else ())

  @classmethod
  def from_config(cls, config: Any) -> Trainables:
    return cls(config.conditioning, int(config.clusters_per_class), bool(config.train_unet))

  def build(self, classes: Sequence[ClassInfo], tokenizer: Any) -> ConditioningKind:
    return build(self.conditioning, classes, clusters_per_class=self.clusters_per_class, tokenizer=tokenizer)


def initial_trainable(spec: Trainables, conditioning: ConditioningKind, sd: Any) -> dict:
  """The trainable tree at step 0 (float32 master copies): the conditioning's learned array under its group,
  and "unet" when the U-Net trains."""
  trainable = {conditioning.group: conditioning.init(sd)}
  if spec.train_unet:
    trainable["unet"] = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), sd.params["unet"])
  return trainable


def frozen_params(spec: Trainables, sd: Any) -> dict:
  """The base model's parameters that do not train (read by the step, never updated)."""
  frozen = {"vae": sd.params["vae"], "text_encoder": sd.params["text_encoder"]}
  if not spec.train_unet:
    frozen["unet"] = sd.params["unet"]
  return frozen


def tokenize(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
  """[len(texts), 77] int32 ids padded to the model length; refuses prompts that would be cut."""
  max_length = tokenizer.model_max_length
  ids = tokenizer(list(texts), padding="max_length", max_length=max_length, truncation=False, return_tensors="np").input_ids
  if ids.shape[1] != max_length:
    longest = max(texts, key=lambda t: len(tokenizer(t).input_ids))
    raise ValueError(f"prompt {longest!r} tokenizes beyond CLIP's {max_length} tokens")
  return ids.astype(np.int32)
