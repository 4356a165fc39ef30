"""Every sharding decision of the project: the device mesh, how batches and parameters are placed, how work
is split across hosts, and how several hosts join one run.

Data parallelism only: a 1-D mesh over all global devices, batches split along `DATA_AXIS`, parameters
and optimizer state replicated. The same code runs on 1 CPU, N local devices and many hosts.
"""

from __future__ import annotations

from typing import Any, Sequence, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

T = TypeVar("T")


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data axis, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This process's share of a global batch; refuses sizes the devices cannot split evenly."""
  if global_batch_size % mesh.size:
    raise ValueError(
        f"global batch size {global_batch_size} is not divisible by the {mesh.size} devices of the mesh")
  return global_batch_size // jax.process_count()


def global_batch(local_tree: Any, mesh: Mesh) -> Any:
  """Assembles per-process numpy batches into global arrays sharded along the data axis."""
  sharding = data_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated_sharding(mesh))


def host_slice(items: Sequence[T]) -> list[T]:
  """This process's share of a work list (round robin, so every host gets a similar mix)."""
  return list(items[jax.process_index()::jax.process_count()])


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int) -> None:
  """Joins a multi-host run. On CPU hosts the cross-process collectives go through gloo."""
  if jax.config.jax_platforms in (None, "", "cpu") or jax.config.jax_platforms.startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
