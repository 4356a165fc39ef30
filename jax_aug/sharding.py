"""Every sharding decision of the project: the device mesh, how batches and parameters are placed, how work
is split across hosts, and how several hosts join one run.

A 1-D mesh over all global devices, batches split along `DATA_AXIS`. Parameters and optimizer state are
either replicated (plain data parallelism) or, chosen by config ("fsdp"), split over the same data axis
FSDP-style: each leaf's largest evenly divisible dimension is split, XLA gathers it where the step uses it,
so per-device state memory drops by the number of devices while the math stays that of one device. The
same code runs on 1 CPU, N local devices and many hosts.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

T = TypeVar("T")


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def run_devices(num_devices: int, devices: Sequence[jax.Device] | None = None, *, field: str) -> list[jax.Device]:
  """The devices a run's mesh spans (of `devices`, default jax.devices()): all of them (`num_devices` 0), or the
  first `num_devices` of a single-process run, for a model too small to gain from being split (the mini world's
  tiny ResNet and its U-Net fine-tuning on one of the process's CPU devices, beside sampling on all of them).
  `field` names the config field in refusals (each caller its own)."""
  devices = jax.devices() if devices is None else list(devices)
  if num_devices == 0:
    return devices
  if not isinstance(num_devices, int) or not 0 < num_devices <= len(devices):
    raise ValueError(f"{field}={num_devices!r}: expected 0 (every device) or 1..{len(devices)} (the devices there are)")
  if jax.process_count() > 1:
    raise ValueError(f"{field}={num_devices}: a run over {jax.process_count()} hosts trains on every device (expected 0)")
  return devices[:num_devices]


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data axis, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


PARAMETER_SHARDINGS = ("replicated", "fsdp")
# Leaves smaller than this stay replicated under "fsdp": splitting a bias saves nothing worth a collective.
FSDP_MIN_ELEMENTS = 2**10


def fsdp_spec(shape: Sequence[int], num_devices: int) -> PartitionSpec:
  """The largest dimension of `shape` that `num_devices` divides, split over the data axis; replicated
  when none divides or the leaf is small. The minor-most dimension is split only when no other one can
  be: TPUs pad it to 128 lanes, so a split 32-wide minor dimension would save no memory."""
  if int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_ELEMENTS:
    return PartitionSpec()
  divisible = [dim for dim, size in enumerate(shape) if size % num_devices == 0]
  major = [dim for dim in divisible if dim < len(shape) - 1]
  if not divisible:
    return PartitionSpec()
  dim = max(major or divisible, key=lambda d: (shape[d], -d))
  return PartitionSpec(*([None] * dim + [DATA_AXIS]))


def check_parameter_sharding(mode: str, field: str = "parameter_sharding") -> None:
  """Refuses a mode that is not one of PARAMETER_SHARDINGS, naming the config `field` it came from."""
  if mode not in PARAMETER_SHARDINGS:
    raise ValueError(f"{field}={mode!r} is not a parameter sharding: expected one of {list(PARAMETER_SHARDINGS)}")


def state_shardings(tree: Any, mesh: Mesh, mode: str) -> Any:
  """NamedShardings for a tree of parameters / optimizer state (arrays or ShapeDtypeStructs):
  "replicated" everywhere, or "fsdp" (fsdp_spec per leaf)."""
  check_parameter_sharding(mode)
  if mode == "replicated":
    return jax.tree.map(lambda _: replicated_sharding(mesh), tree)
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, mesh.size)), tree)


def with_sharding(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or shape structs) laid out by `shardings` (a tree or one sharding)."""
  if not isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings), tree)


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This process's share of a global batch; refuses sizes the devices cannot split evenly."""
  if global_batch_size % mesh.size:
    raise ValueError(f"global batch size {global_batch_size} is not divisible by the {mesh.size} devices of the mesh")
  return global_batch_size // jax.process_count()


def global_batch(local_tree: Any, mesh: Mesh) -> Any:
  """Assembles per-process numpy batches into global arrays sharded along the data axis."""
  sharding = data_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_tree)


def prefetch_to_device(batches: Iterable[dict], mesh: Mesh, device_keys: Sequence[str], size: int = 2) -> Iterator[dict]:
  """The batches in order, each with its `device_keys` made global arrays (`global_batch`) and the other
  entries left on the host (e.g. the loaders' `skipped` counts).

  A background thread reads and transfers up to `size` batches ahead, so the host-to-device copy of the
  next batch overlaps the current step (flax's imagenet example does this with prefetch_to_device). An
  error of the loader or the transfer is raised here, at the batch where it happened; stopping early
  (break, an exception in the step) stops the thread.
  """
  if size < 1:
    raise ValueError(f"prefetch size must be at least 1, got {size}")
  ready: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()
  done = object()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        ready.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for batch in batches:
        on_device = global_batch({k: batch[k] for k in device_keys}, mesh)
        if not put({**batch, **on_device}):
          return
      put(done)
    except BaseException as e:  # pylint: disable=broad-except  (re-raised in the consumer)
      put(e)

  thread = threading.Thread(target=produce, name="prefetch_to_device", daemon=True)
  thread.start()
  try:
    while (item := ready.get()) is not done:
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    thread.join()


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated_sharding(mesh))


def host_slice(items: Sequence[T]) -> list[T]:
  """This process's share of a work list (round robin, so every host gets a similar mix)."""
  return list(items[jax.process_index() :: jax.process_count()])


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int) -> None:
  """Joins a multi-host run. On CPU hosts the cross-process collectives go through gloo."""
  if jax.config.jax_platforms in (None, "", "cpu") or jax.config.jax_platforms.startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
