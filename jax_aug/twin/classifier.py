"""The classifier's PyTorch twin: torchvision's ResNet trained with the recipe of jax_aug/classifier, step
for step on the same batches.

What is shared with our trainer, not copied: the initial parameters (`train.initial_state`, ported by
`port.flax_to_torch`), the weight-decay mask (`steps.weight_decay_mask`), the plateau schedule
(`schedule.update`), the grain loaders (`train.train_loader` / `train.eval_loader`, same images, order,
crops and flips; converted to NCHW tensors) and the metrics / results formats (`train.epoch_row`,
`train.results_record`, `train.step_loss_rows`). What is PyTorch's own: the network (torchvision's
Bottleneck blocks), the loss (`F.cross_entropy`), autograd, `torch.optim.SGD` and BatchNorm.

A twin run directory mirrors a classifier run's: config.json, metrics.jsonl, step_losses.jsonl,
results.json, and checkpoints/{latest,best}.safetensors + .json (resume after the last finished epoch).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from ml_collections import ConfigDict
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn
from tqdm import tqdm

from jax_aug import io, sharding
from jax_aug import metrics as metrics_lib
from jax_aug.classifier import model as model_lib
from jax_aug.classifier import port, schedule, steps, train
from jax_aug.data import pipeline

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_MOMENTUM_PREFIX = "momentum."


class ConfigResNet(torchvision.models.ResNet):
  """torchvision's ResNet (Bottleneck blocks, `_make_layer`) with a config's `stage_sizes` and stem width
  `num_filters`; `(3, 4, 6, 3), 64` is exactly `torchvision.models.resnet50` (tested). torchvision's
  constructor hard-codes four stages of 64..512, hence the own `__init__`; module names (conv1, bn1,
  layer<i>.<j>, fc) are torchvision's, which `port.flax_to_torch` targets."""

  def __init__(self, stage_sizes: Sequence[int], num_filters: int, num_classes: int):
    nn.Module.__init__(self)  # pylint: disable=non-parent-init-called  (see the docstring)
    self._norm_layer, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, 1, 1, 64
    self.inplanes = num_filters
    self.conv1 = nn.Conv2d(3, num_filters, kernel_size=7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(num_filters)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    self.stages = len(stage_sizes)
    for stage, blocks in enumerate(stage_sizes):
      setattr(
        self,
        f"layer{stage + 1}",
        self._make_layer(
          torchvision.models.resnet.Bottleneck, num_filters * 2**stage, blocks, stride=1 if stage == 0 else 2
        ),
      )
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(self.inplanes, num_classes)

  def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for stage in range(self.stages):
      x = getattr(self, f"layer{stage + 1}")(x)
    return self.fc(torch.flatten(self.avgpool(x), 1))


def build_model(model_config: ConfigDict, num_classes: int, variables: dict) -> ConfigResNet:
  """The torchvision twin of `model_lib.build_model(model_config)`, holding the Flax `variables`."""
  model = ConfigResNet(tuple(model_config.stage_sizes), model_config.num_filters, num_classes)
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in port.flax_to_torch(variables).items()}, strict=True)
  return model


def initial_variables(config: ConfigDict, num_classes: int) -> dict:
  """The classifier trainer's step-0 parameters and BN statistics for `config` (numpy)."""
  model = model_lib.build_model(config.model, num_classes=num_classes)
  state = train.initial_state(config, model, steps.make_optimizer(config.optimizer), sharding.make_mesh())
  return jax.device_get(state.variables())


def make_optimizer(model: nn.Module, optimizer_config: ConfigDict, variables: dict) -> torch.optim.SGD:
  """torch.optim.SGD with the classifier optimizer's momentum, Nesterov flag and learning rate, and weight
  decay on exactly the parameters `steps.weight_decay_mask` selects (two parameter groups)."""
  mask = steps.weight_decay_mask(variables["params"], optimizer_config.weight_decay_applies_to)
  # The mask as arrays of 0/1 in each parameter's shape goes through the same port as the weights.
  as_arrays = jax.tree.map(lambda decayed, p: np.full(np.shape(p), float(decayed), np.float32), mask, variables["params"])
  decayed = {
    k
    for k, v in port.flax_to_torch({"params": as_arrays, "batch_stats": variables["batch_stats"]}).items()
    if "running_" not in k and "num_batches" not in k and v.all()
  }
  named = dict(model.named_parameters())
  groups = [
    {"params": [p for k, p in named.items() if k in decayed], "weight_decay": optimizer_config.weight_decay},
    {"params": [p for k, p in named.items() if k not in decayed], "weight_decay": 0.0},
  ]
  return torch.optim.SGD(
    [g for g in groups if g["params"]],
    lr=optimizer_config.learning_rate,
    momentum=optimizer_config.momentum,
    nesterov=optimizer_config.nesterov,
  )


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
  for group in optimizer.param_groups:
    group["lr"] = learning_rate


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
  """A loader's NHWC uint8 batch as a normalised NCHW float32 tensor (as the jitted steps normalise it)."""
  return torch.from_numpy(np.ascontiguousarray(pipeline.normalize(images).transpose(0, 3, 1, 2))).to(device)


def _autocast(device: torch.device, dtype: str):
  """Our `model.dtype="bfloat16"` computes in bfloat16 with float32 parameters; the closest PyTorch has is
  autocast (which keeps BatchNorm and the loss in float32)."""
  return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def train_step(
  model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor, *, dtype: str = "float32"
) -> tuple[torch.Tensor, torch.Tensor]:
  """One SGD step in train mode; returns (mean cross-entropy loss, number of correct top-1 predictions)."""
  model.train()
  optimizer.zero_grad(set_to_none=True)
  with _autocast(images.device, dtype):
    logits = model(images)
  loss = F.cross_entropy(logits.float(), labels)
  loss.backward()
  optimizer.step()
  return loss.detach(), (logits.detach().argmax(-1) == labels).sum()


@torch.no_grad()
def evaluate(
  model: nn.Module, records: Sequence[dict], *, wnids: Sequence[str], config: ConfigDict, device: torch.device
) -> dict:
  """Top-1 (%) overall and per class, the same batches and counting as `train.evaluate`."""
  model.eval()
  correct = np.zeros(len(wnids), np.int64)
  count = np.zeros(len(wnids), np.int64)
  skipped = 0
  for batch in train.eval_loader(records, wnids=wnids, config=config, process_index=0, process_count=1):
    skipped += int(batch["skipped"].sum())
    with _autocast(device, config.model.dtype):
      predicted = model(to_tensor(batch["image"], device)).argmax(-1).cpu().numpy()
    mask, labels = batch["mask"], batch["label"]
    np.add.at(correct, labels[mask], (predicted == labels)[mask])
    np.add.at(count, labels[mask], 1)
  return train.top1_summary(correct, count, wnids, skipped=skipped)


def _train_epoch(model, optimizer, records, *, wnids, epoch: int, config: ConfigDict, device):
  num_steps = pipeline.steps_per_epoch(len(records), config.global_batch_size)
  loss_sum = torch.zeros((), device=device)
  correct_sum = torch.zeros((), dtype=torch.int64, device=device)
  first_losses, skipped = [], 0
  loader = train.train_loader(records, wnids=wnids, epoch=epoch, config=config, process_index=0, process_count=1)
  for step, batch in enumerate(tqdm(loader, total=num_steps, desc=f"torch epoch {epoch}", unit="step", leave=False)):
    loss, correct = train_step(
      model,
      optimizer,
      to_tensor(batch["image"], device),
      torch.from_numpy(batch["label"]).long().to(device),
      dtype=config.model.dtype,
    )
    loss_sum += loss
    correct_sum += correct
    skipped += int(batch["skipped"].sum())
    if epoch * num_steps + step < train.LOGGED_FIRST_STEPS:
      first_losses.append(loss)
  return {
    "train_loss": float(loss_sum) / num_steps,
    "train_top1": 100.0 * int(correct_sum) / (num_steps * config.global_batch_size),
    "train_skipped_images": skipped,
  }, [float(loss) for loss in first_losses]


class TwinCheckpoints:
  """`latest` (model, momentum buffers, schedule: resume) and `best` (model: scoring) as safetensors + JSON,
  each written atomically, JSON last, so a crash between the two leaves the previous pair readable."""

  def __init__(self, workdir: Path):
    self.dir = Path(workdir) / CHECKPOINT_DIR

  def _write(self, name: str, tensors: dict, meta: dict) -> None:
    io.atomic_write_bytes(
      self.dir / f"{name}.safetensors", save_tensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    )
    io.atomic_write_json(self.dir / f"{name}.json", meta)

  def _read(self, name: str) -> tuple[dict, dict] | None:
    meta_path = self.dir / f"{name}.json"
    if not meta_path.exists():
      return None
    return load_tensors((self.dir / f"{name}.safetensors").read_bytes()), io.read_json(meta_path)

  def save_latest(self, model, optimizer, meta: dict) -> None:
    names = {id(p): k for k, p in model.named_parameters()}
    tensors = dict(model.state_dict())
    for group in optimizer.param_groups:
      for p in group["params"]:
        buffer = optimizer.state.get(p, {}).get("momentum_buffer")
        if buffer is not None:
          tensors[_MOMENTUM_PREFIX + names[id(p)]] = buffer
    self._write("latest", tensors, meta)

  def restore_latest(self, model, optimizer) -> dict | None:
    found = self._read("latest")
    if found is None:
      return None
    tensors, meta = found
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(_MOMENTUM_PREFIX)}, strict=True)
    for name, p in model.named_parameters():
      if _MOMENTUM_PREFIX + name in tensors:
        optimizer.state[p]["momentum_buffer"] = tensors[_MOMENTUM_PREFIX + name].to(p.device)
    return meta

  def save_best(self, model, meta: dict) -> None:
    self._write("best", dict(model.state_dict()), meta)

  def restore_best(self, model) -> dict:
    tensors, meta = self._read("best")
    model.load_state_dict(tensors, strict=True)
    return meta


def default_device() -> torch.device:
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_and_evaluate(
  config: ConfigDict, workdir: str | os.PathLike, data: dict, device: torch.device | None = None
) -> dict:
  """The twin of `train.train_and_evaluate(config, ...)` in `workdir`, on `data` (`train.load_run_data`
  of the JAX run, so both read the same splits); resumes what is there and returns results.json's dict."""
  workdir = Path(workdir)
  device = device or default_device()
  config_json = train.config_record(config)
  results_path, metrics_path, config_path = (
    workdir / train.RESULTS_FILE,
    workdir / train.METRICS_FILE,
    workdir / train.CONFIG_FILE,
  )
  if config_path.exists() and io.read_json(config_path) != config_json:
    raise ValueError(f"{workdir} holds a twin run of a different config ({config_path}); use a new workdir")
  if results_path.exists():
    return io.read_json(results_path)
  io.atomic_write_json(config_path, config_json)

  wnids = data["wnids"]
  variables = initial_variables(config, len(wnids))
  model = build_model(config.model, len(wnids), variables).to(device)
  optimizer = make_optimizer(model, config.optimizer, variables)
  checkpoints = TwinCheckpoints(workdir)
  plateau, first_epoch, stop_reason = schedule.initial_state(config.optimizer.learning_rate), 0, None
  meta = checkpoints.restore_latest(model, optimizer)
  if meta is not None:
    plateau = schedule.PlateauState.from_json(meta["schedule"])
    first_epoch, stop_reason = meta["epoch"] + 1, meta["stop_reason"]
    log.info("resuming the twin in %s after epoch %d", workdir, meta["epoch"])
    metrics_lib.drop_rows_from(metrics_path, meta["epoch"] + 1, key="epoch")
  metrics_log = io.JsonlManifest(metrics_path)
  num_steps = pipeline.steps_per_epoch(len(data["train"]), config.global_batch_size)

  epoch = first_epoch
  while not plateau.stop:
    set_learning_rate(optimizer, plateau.learning_rate)
    start = time.time()
    train_metrics, first_losses = _train_epoch(
      model, optimizer, data["train"], wnids=wnids, epoch=epoch, config=config, device=device
    )
    train_seconds = time.time() - start
    val = evaluate(model, data["validation"], wnids=wnids, config=config, device=device)
    learning_rate = plateau.learning_rate
    plateau, decision = schedule.update(plateau, epoch, val["top1"], **config.schedule.to_dict())
    if decision.improved:
      checkpoints.save_best(model, {"epoch": epoch, "validation": val})
    row = train.epoch_row(
      epoch, learning_rate, train_metrics, val, plateau, decision, train_seconds, num_train=len(data["train"]), config=config
    )
    train.append_step_losses(workdir / train.STEP_LOSSES_FILE, train.step_loss_rows(epoch, num_steps, first_losses))
    metrics_log.append(row)
    log.info("torch epoch %d: %s", epoch, {k: row[k] for k in ("train_loss", "validation_top1")})
    stop_reason = decision.stop_reason
    checkpoints.save_latest(model, optimizer, {"epoch": epoch, "schedule": plateau.to_json(), "stop_reason": stop_reason})
    epoch += 1

  best_meta = checkpoints.restore_best(model)
  if data["test"] is not None:
    final, eval_split = evaluate(model, data["test"], wnids=wnids, config=config, device=device), "test"
  else:
    final, eval_split = best_meta["validation"], "validation"
  results = train.results_record(
    final,
    eval_split,
    best_meta["validation"],
    best_epoch=best_meta["epoch"],
    plateau=plateau,
    stop_reason=stop_reason,
    data=data,
    config=config,
  )
  results["framework"] = f"torch {torch.__version__}, torchvision {torchvision.__version__} on {device}"
  io.atomic_write_json(results_path, results)
  return results
