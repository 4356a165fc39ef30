#!/usr/bin/env bash
# Draws the mini world and trains its neural stages on one accelerator, from a clean checkout, as the shipped
# weights were trained (docs/mini_world.md, "Training run"):
#
#   scripts/train_mini_world_accelerator.sh OUT [BUDGET_S] [EXTRA_CLIP_STEPS] [--config.<stage>.<field>=...]
#
# OUT/data            the world (make_mini_world.py, drawn by every CPU core: same bytes as one process)
# OUT/train           clip + vae side by side (each far too small to fill an accelerator), then unet with the
#                     aesthetic head and safety checker beside it: a complete export (OUT/train/export)
# OUT/train_long_clip with EXTRA_CLIP_STEPS: a second CLIP trained for that many steps beside the first, and a
#                     U-Net on its text encoder (the VAE is shared), so that a run that misses the CLIP quality
#                     bars at the configured schedule has its longer alternative without another run.
# Every stage stops at BUDGET_S seconds from the start (default 3600) and resumes on the next call. Further
# arguments go to every training call (e.g. --config.unet.log_every=1 to see the U-Net's first steps).
set -euo pipefail
out=${1:?usage: $0 OUT [BUDGET_S] [EXTRA_CLIP_STEPS] [--config.<stage>.<field>=...]}
end=$((SECONDS + ${2:-3600}))
long_clip=${3:-}
shift $(($# < 3 ? $# : 3))
overrides=("$@")
cd "$(dirname "$0")/.."
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several trainings share the one accelerator

python3 scripts/make_mini_world.py --out="$out/data" --workers="$(nproc)"

train() {  # train OUT_SUBDIR STAGES [config overrides...]
  local dir=$1 stages=$2
  shift 2
  timeout $((end - SECONDS)) python3 scripts/train_mini_world.py --config=configs/mini_world_train.py \
    --data="$out/data" --out="$out/$dir" --config.stages="$stages" "${overrides[@]}" "$@" >"$out/$dir-$stages.log" 2>&1
}

train train clip &
pids=($!)
train train vae &
pids+=($!)
if [[ -n $long_clip ]]; then
  train train_long_clip clip --config.clip.steps="$long_clip" &
  pids+=($!)
fi
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
((status == 0)) || { echo "a first-phase stage failed or ran out of time (status $status): see $out/*.log"; exit "$status"; }

# The U-Net's loss was NaN from the first logged step on an H200 (jax 0.11.2) while the same stage is finite on
# CPU with jax 0.10.2 and 0.11.2 alike (docs/mini_world.md): with jax_debug_nans a non-finite output re-runs the
# step primitive by primitive and raises at the first one that makes a NaN, naming its source line in the log.
export JAX_DEBUG_NANS=true
train train unet &
pids=($!)
train train aesthetic,safety &  # the heads need only the CLIP: fitted beside the U-Net
pids+=($!)
if [[ -n $long_clip ]]; then
  mkdir -p "$out/train_long_clip/export"
  cp -r "$out/train/export/vae" "$out/train_long_clip/export/"
  train train_long_clip unet &
  pids+=($!)
fi
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
