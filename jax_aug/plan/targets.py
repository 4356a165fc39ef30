"""What a plan compiles for: a target's devices, and each device kind's peak bf16 FLOP/s and memory.

Targets: `tpu:<generation>-<n>` as Cloud TPU names slices (v4 and v5p count TensorCores, 2 per chip; v5e
and v6e count chips), described on any machine through libtpu's topology API (the `plan` extra), and
`local`, the devices this process has (a GPU box plans for its own GPUs). Peak figures and their sources:
docs/plan.md.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import jax

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class DeviceKind:
  name: str
  peak_bf16_flops: float  # dense, per chip (a GPU is one chip), FLOP/s
  hbm_bytes: int  # per chip


# Vendor figures (docs/plan.md cites each). Matched against `jax.Device.device_kind` by substring, in order
# ("TPU v5 lite" is v5e, plain "TPU v5" is v5p).
DEVICE_KINDS: tuple[tuple[str, DeviceKind], ...] = (
  ("TPU v4", DeviceKind("TPU v4", 275e12, 32 * GIB)),
  ("TPU v5 lite", DeviceKind("TPU v5e", 197e12, 16 * GIB)),
  ("TPU v6 lite", DeviceKind("TPU v6e", 918e12, 32 * GIB)),
  ("TPU v5", DeviceKind("TPU v5p", 459e12, 95 * GIB)),
  ("H200", DeviceKind("NVIDIA H200", 989e12, 141 * 10**9)),
  ("H100", DeviceKind("NVIDIA H100 SXM", 989e12, 80 * GIB)),
  ("A100-SXM4-40GB", DeviceKind("NVIDIA A100 40GB", 312e12, 40 * GIB)),
  ("A100", DeviceKind("NVIDIA A100 80GB", 312e12, 80 * GIB)),
)

# tpu:<generation>-<n> -> (topology generation name, cores per chip). Chips are laid out as Cloud TPU
# lays out slices of that size (2-D tori for v5e/v6e, 3-D for v4/v5p).
_TPU_GENERATIONS = {"v4": ("v4", 2), "v5p": ("v5p", 2), "v5e": ("v5e", 1), "v6e": ("v6e", 1)}
_TOPOLOGIES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_TOPOLOGIES_3D = {
  1: "1x1x1",
  2: "1x1x2",
  4: "2x2x1",
  8: "2x2x2",
  16: "2x2x4",
  32: "2x4x4",
  64: "4x4x4",
  128: "4x4x8",
  256: "4x8x8",
  512: "8x8x8",
}


@dataclasses.dataclass(frozen=True)
class Target:
  name: str  # as given, e.g. "tpu:v5e-16"
  topology: str | None  # e.g. "v5e:4x4"; None for local
  devices: tuple  # jax devices (abstract TPU devices for a topology)

  @property
  def device_kind(self) -> DeviceKind | None:
    return device_kind(self.devices[0].device_kind)

  @property
  def num_hosts(self) -> int:
    return len({d.process_index for d in self.devices})

  @property
  def devices_per_chip(self) -> int:
    """libtpu describes a v4 topology with one device per TensorCore (2 per chip), v5e/v5p/v6e with one
    per chip; a device then has its share of the chip's memory and FLOP/s."""
    chips = {tuple(getattr(d, "coords", ())) + (d.process_index,) for d in self.devices}
    return len(self.devices) // len(chips) if self.topology is not None else 1

  def hbm_bytes(self) -> int | None:
    """Memory per device: the runtime's own limit where a real device reports one, else the table's."""
    stats = _memory_stats(self.devices[0]) if self.topology is None else None
    if stats and stats.get("bytes_limit"):
      return int(stats["bytes_limit"])
    kind = self.device_kind
    return kind.hbm_bytes // self.devices_per_chip if kind else None

  def peak_flops(self) -> float | None:
    """bf16 FLOP/s per device; None where the table has no figure (CPUs)."""
    kind = self.device_kind
    return kind.peak_bf16_flops / self.devices_per_chip if kind else None


def _memory_stats(device) -> dict | None:
  try:
    return device.memory_stats()
  except Exception:  # CPU devices have none (and some backends raise instead of returning None)
    return None


def device_kind(jax_device_kind: str) -> DeviceKind | None:
  """The table's entry for a `jax.Device.device_kind` string; None (no estimate) for CPUs and unknown kinds."""
  for pattern, kind in DEVICE_KINDS:
    if pattern in jax_device_kind:
      return kind
  return None


def tpu_topology(name: str) -> str:
  """`tpu:v5e-16` -> "v5e:4x4" (the topology name libtpu's get_topology_desc takes)."""
  match = re.fullmatch(r"tpu:(v4|v5p|v5e|v6e)-(\d+)", name)
  if match is None:
    raise ValueError(
      f"unknown plan target {name!r}: expected 'local' or 'tpu:<generation>-<n>' with generation"
      f" one of {sorted(_TPU_GENERATIONS)} (e.g. tpu:v5e-16, tpu:v4-32, tpu:v5p-8)"
    )
  generation, cores = match.group(1), int(match.group(2))
  topology_name, cores_per_chip = _TPU_GENERATIONS[generation]
  chips, remainder = divmod(cores, cores_per_chip)
  shapes = _TOPOLOGIES_3D if cores_per_chip == 2 else _TOPOLOGIES_2D
  if remainder or chips not in shapes:
    raise ValueError(
      f"plan target {name!r}: {generation} slices come in sizes {sorted(c * cores_per_chip for c in shapes)}, got {cores}"
    )
  return f"{topology_name}:{shapes[chips]}"


def resolve(name: str, local_devices: Sequence[jax.Device] | None = None) -> Target:
  """The target `name` names: 'local' or 'tpu:<generation>-<n>' (needs libtpu: pip install '.[plan]')."""
  if name == "local":
    return Target(name, None, tuple(local_devices if local_devices is not None else jax.devices()))
  topology = tpu_topology(name)
  # libtpu takes /tmp/libtpu_lockfile so that two processes never drive one TPU; describing a topology
  # drives no chip, and without this a plan fails while any other process (e.g. a jax run with
  # JAX_PLATFORMS unset, which probes libtpu) holds the lock.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies

  try:
    desc = topologies.get_topology_desc(topology_name=topology, platform="tpu")
  except Exception as e:  # no libtpu: jax raises a RuntimeError about the missing 'tpu' plugin
    raise RuntimeError(
      f"planning for {name} ({topology}) needs libtpu to describe the TPU topology: install"
      f" the plan extra (pip install -e '.[plan]'); jax said: {e}"
    ) from e
  return Target(name, topology, tuple(desc.devices))
