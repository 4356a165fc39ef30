"""AOT-compiles one hot step for a target and reads what XLA says it costs: per-device memory and FLOPs.

Nothing runs: the step is lowered with ShapeDtypeStructs (carrying their shardings on a mesh of the
target's devices) and compiled. XLA's cost_analysis counts a while/fori_loop body once, not once per
iteration (../shared/PROTOCOL.md), so a step with a loop declares its body (`LoopBody`): the body is
compiled on its own and its FLOPs are added (trip_count - 1) more times.

Compiles of big graphs take minutes on a CPU, so each prints a progress line, and results are cached on
disk keyed by the lowered program text (which fixes the step, the shapes and the shardings) and the target.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from jax_aug import io
from jax_aug.plan.targets import GIB, Target

CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class LoopBody:
  """The body of a loop inside a step: `fn(*args)` is one iteration, run `trip_count` times per call."""

  name: str
  fn: Callable
  args: tuple
  trip_count: int


@dataclasses.dataclass(frozen=True)
class HotStep:
  """One jitted production function at the config's real shapes. `args`: ShapeDtypeStruct trees with
  shardings; `unit`: what one call does (e.g. "train step, batch 256")."""

  stage: str
  fn: Callable
  args: tuple
  unit: str
  loops: tuple[LoopBody, ...] = ()
  kwargs: dict = dataclasses.field(default_factory=dict)  # static keyword arguments of `fn`


@dataclasses.dataclass(frozen=True)
class StepCost:
  """Per device, as XLA's memory_analysis and cost_analysis report them for the partitioned program.

  When the TPU compiler itself refuses the program for lack of HBM, `refused` holds its message and the
  sizes are None: the step does not fit. When the production code refuses the config on the target
  (`cannot_run`), `refused` holds its error.
  """

  stage: str
  unit: str
  target: str
  num_devices: int
  argument_bytes: int | None
  output_bytes: int | None
  alias_bytes: int | None  # outputs that reuse donated argument buffers (counted once)
  temp_bytes: int | None
  code_bytes: int | None
  flops_per_device: float | None  # loop bodies counted trip_count times
  loops: tuple[dict, ...]  # {"name", "trip_count", "flops_per_device"} of each declared loop body
  compile_seconds: float
  refused: str | None = None
  cannot_run: bool = False  # `refused` is the production code's own refusal of the config, not the compiler's

  @classmethod
  def refusal(cls, stage: str, target: str, why: str, *, cannot_run: bool, unit: str = "", num_devices: int = 0) -> StepCost:
    """The cost of a step that was refused: by the production code (`cannot_run`, nothing built: no unit, no
    devices) or by the compiler for lack of memory (does not fit)."""
    return cls(
      stage=stage,
      unit=unit,
      target=target,
      num_devices=num_devices,
      argument_bytes=None,
      output_bytes=None,
      alias_bytes=None,
      temp_bytes=None,
      code_bytes=None,
      flops_per_device=None,
      loops=(),
      compile_seconds=0.0,
      refused=why,
      cannot_run=cannot_run,
    )

  @property
  def peak_bytes(self) -> int | None:
    if self.refused is not None:
      return None
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

  def fits(self, hbm_bytes: int) -> bool:
    return self.refused is None and self.peak_bytes <= hbm_bytes

  def seconds(self, peak_flops: float, utilization: float) -> float | None:
    """Time of one call at `utilization` of the device's peak (every device does its share in parallel)."""
    if self.flops_per_device is None:
      return None
    return self.flops_per_device / (peak_flops * utilization)

  def to_json(self) -> dict:
    peak = self.peak_bytes
    return {**dataclasses.asdict(self), "peak_bytes": peak, "peak_gib": None if peak is None else peak / GIB}


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
    analysis = analysis[0]
  return float(analysis.get("flops", 0.0))


def _compile(lowered, label: str, log: Callable[[str], None]):
  log(f"plan: compiling {label} ...")
  start = time.time()
  compiled = lowered.compile()
  seconds = time.time() - start
  log(f"plan: compiled {label} in {seconds:.1f} s")
  return compiled, seconds


def _num_devices(args: Sequence) -> int:
  """How many devices the step runs on: those its arguments are laid out over."""
  return max(len(leaf.sharding.device_set) for leaf in jax.tree.leaves(args) if getattr(leaf, "sharding", None) is not None)


def _cache_key(lowered_text: str, target: Target) -> str:
  digest = hashlib.sha256()
  for part in (str(CACHE_VERSION), jax.__version__, target.name, str(target.topology), lowered_text):
    digest.update(part.encode())
    digest.update(b"\0")
  return digest.hexdigest()[:32]


def compile_step(
  step: HotStep,
  target: Target,
  *,
  cache_dir: str | Path | None = None,
  log: Callable[[str], None] = print,
  compile_in_child: Callable[[str], None] | None = None,
) -> StepCost:
  """The step's per-device cost on `target` (its args must carry shardings on devices of target.devices).

  With `compile_in_child` (and a `cache_dir`), a step not in the cache is compiled by
  `compile_in_child(step.stage)`, a fresh process that writes the same cache entry, and read from there:
  XLA keeps much of a big compile's memory for the life of the process (one planning process grew to 24 GB
  over ten SD-v1.4-sized compiles and was killed), so each compile gives it back when its process ends."""
  label = f"{step.stage} ({step.unit}) for {target.name}"
  lowered = step.fn.lower(*step.args, **step.kwargs)
  bodies = [loop.fn.lower(*loop.args) for loop in step.loops]
  num_devices = _num_devices(step.args)
  cache_path = None
  if cache_dir is not None:
    text = lowered.as_text() + "".join(body.as_text() + str(loop.trip_count) for body, loop in zip(bodies, step.loops))
    cache_path = Path(cache_dir) / f"{_cache_key(text, target)}.json"
    if cache_path.exists():
      log(f"plan: {label}: cached ({cache_path.name})")
      return _read_cache(cache_path)
    if compile_in_child is not None:
      log(f"plan: {label}: compiling in a fresh process")
      compile_in_child(step.stage)
      if not cache_path.exists():
        raise RuntimeError(f"the process that compiled {step.stage} for {target.name} wrote no {cache_path}")
      return _read_cache(cache_path)
  try:
    compiled, seconds = _compile(lowered, label, log)
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    log(f"plan: {label}: the compiler refused it: {e}")
    cost = StepCost.refusal(step.stage, target.name, str(e), cannot_run=False, unit=step.unit, num_devices=num_devices)
    _write_cache(cache_path, cost)
    return cost
  memory = compiled.memory_analysis()
  flops = _flops(compiled)
  loops = []
  for body, loop in zip(bodies, step.loops):
    body_flops, body_seconds = _body_flops(body, f"{step.stage} loop body {loop.name}", target, cache_dir, log)
    seconds += body_seconds
    flops += (loop.trip_count - 1) * body_flops
    loops.append({"name": loop.name, "trip_count": loop.trip_count, "flops_per_device": body_flops})
  cost = StepCost(
    stage=step.stage,
    unit=step.unit,
    target=target.name,
    num_devices=num_devices,
    argument_bytes=int(memory.argument_size_in_bytes),
    output_bytes=int(memory.output_size_in_bytes),
    alias_bytes=int(memory.alias_size_in_bytes),
    temp_bytes=int(memory.temp_size_in_bytes),
    code_bytes=int(memory.generated_code_size_in_bytes),
    flops_per_device=flops,
    loops=tuple(loops),
    compile_seconds=seconds,
  )
  _write_cache(cache_path, cost)
  return cost


def _body_flops(
  lowered, label: str, target: Target, cache_dir: str | Path | None, log: Callable[[str], None]
) -> tuple[float, float]:
  """FLOPs per device of one loop iteration and the seconds its compile took (cached on its own: txt2img
  and img2img share their denoise step)."""
  path = None if cache_dir is None else Path(cache_dir) / f"body-{_cache_key(lowered.as_text(), target)}.json"
  if path is not None and path.exists():
    log(f"plan: {label}: cached ({path.name})")
    return io.read_json(path)["flops_per_device"], 0.0
  compiled, seconds = _compile(lowered, label, log)
  flops = _flops(compiled)
  if path is not None:
    path.parent.mkdir(parents=True, exist_ok=True)
    io.atomic_write_json(path, {"flops_per_device": flops})
  return flops, seconds


def _read_cache(cache_path: Path) -> StepCost:
  record = io.read_json(cache_path)
  return StepCost(**{**record, "loops": tuple(record["loops"])})


def _write_cache(cache_path: Path | None, cost: StepCost) -> None:
  if cache_path is not None:
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    io.atomic_write_json(cache_path, dataclasses.asdict(cost))
