"""Wall time of whole classifier runs as a study runs them (`train.train_and_evaluate`: loaders, train steps,
per-epoch validation, checkpoints, the test score), against the PyTorch twin of the same run in the same process,
with the memory cache of decoded images off and on (config `input.memory_cache_mb`).

  .venv/bin/python benchmarks/classifier_run_time.py \
      --run_config=runs/mini/train/simple_prompt/r0/config.json --epochs=10

`--run_config` is the config.json of any finished classifier run (a study's `train/<method>/r<i>` or a selection
candidate's `classifier/`): its manifests, class list and recipe are reused; the run is held to exactly
`--epochs` epochs (early stopping off), each variant in a fresh folder under `--out`. Order: ours without the
cache, ours with it, the twin with it (the cache's store is per process, so the twin and the second of ours find
the images decoded; `--rounds` repeats the whole sequence, and the cache is emptied between rounds). Compilation
happens in the first run of ours; a persistent compilation cache (under `--out`, as the study keeps its own) serves
every later run, so compare the rounds after the first.

Measure with nothing else running: the load average is printed beside every figure.
"""

import shutil
import tempfile
import time
from pathlib import Path

import machine_load
from absl import flags

_RUN_CONFIG = flags.DEFINE_string("run_config", None, "config.json of a finished classifier run", required=True)
_EPOCHS = flags.DEFINE_integer("epochs", 10, "epochs per run (early stopping off)")
_MEMORY_CACHE_MB = flags.DEFINE_integer("memory_cache_mb", 256, "the cache's budget in the cached variants")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "repetitions of the three runs; every round is printed")
_BATCH = flags.DEFINE_integer(
  "global_batch_size", 0, "0: the run's; else this batch, the learning rate scaled linearly with it"
)
_OUT = flags.DEFINE_string("out", None, "folder for the runs (default: a temporary folder, deleted)")


def _load(path: str):
  from ml_collections import ConfigDict

  from jax_aug import io

  record = io.read_json(path)
  record.pop("score_manifests", None)

  def tuples(value):  # config.json stores the tuples of the config as lists
    if isinstance(value, dict):
      return {k: tuples(v) for k, v in value.items()}
    return tuple(value) if isinstance(value, list) else value

  return ConfigDict(tuples(record))


def main(argv):
  del argv
  import jax

  out = Path(_OUT.value or tempfile.mkdtemp(prefix="classifier_run_time_"))
  jax.config.update("jax_compilation_cache_dir", str(out / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  from jax_aug.classifier import train
  from jax_aug.data import cache
  from jax_aug.twin import classifier as twin

  base = _load(_RUN_CONFIG.value)
  base.schedule.max_epochs = _EPOCHS.value
  base.schedule.stop_patience = _EPOCHS.value + 1  # exactly --epochs epochs
  base.schedule.lr_patience = _EPOCHS.value + 1
  if _BATCH.value:
    base.optimizer.learning_rate *= _BATCH.value / base.global_batch_size
    base.global_batch_size = _BATCH.value
  print(
    f"{jax.device_count()} {jax.default_backend()} device(s), {_EPOCHS.value} epochs per run, {len(base.wnids)}"
    f" classes, batch {base.global_batch_size}, learning rate {base.optimizer.learning_rate:g}"
  )
  for round_index in range(_ROUNDS.value):
    cache.clear_memory_caches()  # each round starts with nothing decoded
    seconds = {}
    for name, memory_cache_mb, runner in (
      ("ours, no memory cache", 0, "ours"),
      ("ours, memory cache", _MEMORY_CACHE_MB.value, "ours"),
      ("PyTorch twin, memory cache", _MEMORY_CACHE_MB.value, "twin"),
    ):
      config = base.copy_and_resolve_references()
      config.input.memory_cache_mb = memory_cache_mb
      workdir = out / f"round{round_index}" / name.replace(", ", "_").replace(" ", "_")
      shutil.rmtree(workdir, ignore_errors=True)
      start = time.perf_counter()
      if runner == "ours":
        results = train.train_and_evaluate(config, workdir)
      else:
        results = twin.train_and_evaluate(config, workdir, train.load_run_data(config, workdir))
      seconds[name] = time.perf_counter() - start
      print(
        f"round {round_index} {name}: {seconds[name]:.1f} s ({seconds[name] / _EPOCHS.value:.2f} s per epoch),"
        f" test top-1 {results['top1']:.2f}; {machine_load.line('after it')}",
        flush=True,
      )
    twin_seconds = seconds["PyTorch twin, memory cache"]
    print(
      f"round {round_index} ratios to the twin: no cache {seconds['ours, no memory cache'] / twin_seconds:.2f},"
      f" cache {seconds['ours, memory cache'] / twin_seconds:.2f}; cache / no cache"
      f" {seconds['ours, memory cache'] / seconds['ours, no memory cache']:.2f}",
      flush=True,
    )
  if not _OUT.value:
    shutil.rmtree(out)


if __name__ == "__main__":
  machine_load.run(main)
