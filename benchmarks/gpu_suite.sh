#!/usr/bin/env bash
# The GPU figures the docs report, in one go on one CUDA GPU (docs/classifier.md, docs/diffusion.md,
# docs/mini_world.md "The U-Net on a GPU"):
#
#   benchmarks/gpu_suite.sh OUT [BUDGET_S]
#
# 1. the mini world's U-Net stage from scratch on the shipped CLIP + VAE, every step logged, with
#    jax_debug_nans (raises at the first primitive that makes a NaN); stopped after a third of the budget;
# 2. the ResNet-50 train step, bfloat16, vs torchvision AMP channels_last, and grain alone;
# 3. SD v1.4's attention layers (4,096 and 1,024 positions, self and cross): ours (cuDNN where it accepts the
#    layer) vs diffusers' Flax vs PyTorch SDPA, forward, then forward + backward;
# 4. SD v1.4 shapes at 512 px, 50 PNDM steps, batch 8: our engine in bfloat16 vs diffusers' PyTorch fp16, and
#    ours again with diffusers' own attention (the cuDNN lever's worth, same process).
# Each writes OUT/<name>.log; a step that fails or runs out of time does not stop the next.
set -u
out=${1:?usage: $0 OUT [BUDGET_S]}
budget=${2:-580}
start=$SECONDS
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the card
left() { echo $((budget - (SECONDS - start))); }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "
import jax, flax, torch, torchvision, diffusers, transformers
print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__, 'torchvision',
      torchvision.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"; } \
  >"$out/env.txt" 2>&1

work=$(mktemp -d)
python3 scripts/make_mini_world.py --out="$work/world" --workers="$(nproc)" >"$out/world.log" 2>&1
mkdir -p "$work/unet/export"
cp -r jax_aug/assets/mini_world/clip jax_aug/assets/mini_world/vae "$work/unet/export/"
JAX_DEBUG_NANS=true timeout $(($(left) / 3)) python3 scripts/train_mini_world.py --config=configs/mini_world_train.py \
  --data="$work/world" --out="$work/unet" --config.stages=unet --config.unet.log_every=1 \
  --config.unet.checkpoint_every=100000 --config.unet.eval_every=100000 >"$out/unet.log" 2>&1
echo "rc=$?" >>"$out/unet.log"
cp "$work/unet/unet/metrics.jsonl" "$out/unet_metrics.jsonl"

timeout $(($(left) / 2)) python3 benchmarks/classifier_throughput.py --device=gpu --batch_size=256 --image_size=224 \
  --steps=20 --rounds=3 --pipeline_images=2048 --pipeline_workers="$(nproc)" >"$out/classifier.log" 2>&1
echo "rc=$?" >>"$out/classifier.log"

timeout $(($(left) / 5)) python3 benchmarks/attention_throughput.py >"$out/attention.log" 2>&1
echo "rc=$?" >>"$out/attention.log"
timeout $(($(left) / 4)) python3 benchmarks/attention_throughput.py --backward >"$out/attention_backward.log" 2>&1
echo "rc=$?" >>"$out/attention_backward.log"

timeout "$(left)" python3 benchmarks/sampling_throughput.py --mode=gpu --batches=2 --diffusers_attention \
  >"$out/sampling.log" 2>&1
echo "rc=$?" >>"$out/sampling.log"
rm -rf "$work"
