"""The plan (jax_aug/plan): AOT compiles for a TPU topology described by libtpu on this CPU machine.

References: FLOPs of matmuls counted by hand (2 per multiply-add), the study's stage counts worked out by
hand from the protocol and the tiny config, a 4x cut of state bytes when state is split over 4 devices,
and plain replicated training for the FSDP layout (same parameters within float32 rounding).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, _jax_env

PLAN_FLOPS_CODE = """
import jax, jax.numpy as jnp
from jax_aug import sharding
from jax_aug.plan import compile as plan_compile, targets

target = targets.resolve("tpu:v5e-4")
mesh = sharding.make_mesh(target.devices)
B, K, N, TRIPS = 64, 256, 512, 10
x = jax.ShapeDtypeStruct((B, K), jnp.bfloat16, sharding=sharding.data_sharding(mesh))
w = jax.ShapeDtypeStruct((K, N), jnp.bfloat16, sharding=sharding.replicated_sharding(mesh))
sq = jax.ShapeDtypeStruct((K, K), jnp.bfloat16, sharding=sharding.replicated_sharding(mesh))
x_sq = jax.ShapeDtypeStruct((B, K), jnp.bfloat16, sharding=sharding.data_sharding(mesh))

matmul = plan_compile.HotStep("matmul", jax.jit(lambda a, b: a @ b), (x, w), "one matmul")
body = jax.jit(lambda a, b: a @ b)
looped = jax.jit(lambda a, b: jax.lax.fori_loop(0, TRIPS, lambda i, a: a @ b, a))
loop = plan_compile.HotStep("loop", looped, (x_sq, sq), "10 matmuls",
                            loops=(plan_compile.LoopBody("matmul", body, (x_sq, sq), TRIPS),))
uncorrected = plan_compile.HotStep("loop", looped, (x_sq, sq), "10 matmuls")
import tempfile
try:  # a compile process that ends without writing the step's cache entry
  plan_compile.compile_step(matmul, target, cache_dir=tempfile.mkdtemp(), compile_in_child=lambda stage: None)
  silent_child = None
except RuntimeError as e:
  silent_child = str(e)
emit({"silent_child": silent_child,"matmul": plan_compile.compile_step(matmul, target).flops_per_device,
      "loop": plan_compile.compile_step(loop, target).flops_per_device,
      "uncorrected": plan_compile.compile_step(uncorrected, target).flops_per_device,
      "num_devices": len(target.devices), "kind": target.devices[0].device_kind})
"""


def test_flops_of_matmul_steps_equal_the_hand_count(run_jax):
  out = run_jax(PLAN_FLOPS_CODE)
  assert out["num_devices"] == 4 and out["kind"] == "TPU v5 lite"
  per_device_rows = 64 // 4  # the batch is split over the 4 chips, each does its rows' matmul
  assert out["matmul"] == 2 * per_device_rows * 256 * 512
  one = 2 * per_device_rows * 256 * 256
  # The loop's counter (one add and one compare per body, counted in the body XLA reports) is the only
  # non-matmul arithmetic: 2 FLOPs on top of 10 matmuls of 2.1e6 each.
  assert math.isclose(out["loop"], 10 * one, rel_tol=1e-6)
  # Negative control: XLA alone counts the body once, 10x too few; the declared trip count fixes it.
  assert math.isclose(out["uncorrected"], one, rel_tol=1e-6)
  assert out["silent_child"].startswith("the process that compiled matmul for tpu:v5e-4 wrote no ")


def _run_study_plan(workdir, *overrides, target="tpu:v5e-4"):
  env = _jax_env(1)
  return subprocess.run(
    [sys.executable, "run_study.py", "--config=configs/tiny.py", f"--workdir={workdir}", f"--plan={target}", *overrides],
    env=env,
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=1800,
  )


FINETUNED = ("ft_conditioning", "ft_cluster_conditioning", "imagic", "textual_inversion", "pseudo_word_dm")
SAMPLED = ("boomerang", "simple_prompt_no_ws", "simple_prompt", "sariyildiz_prompts", "clip_prompts")
# The tiny config samples 2 images per batch, which the engine cannot split over 4 chips: 4 here.
SAMPLING_BATCH_4 = tuple(f"--config.method_configs.{m}.batch_size=4" for m in SAMPLED + FINETUNED)

# The sampling loop's FLOPs against an independent count: the tiny U-Net (what one loop iteration calls, on
# the guided batch of 2 x 4) and the VAE decoder (after the loop), each compiled alone with the same layout.
UNET_AND_DECODER_FLOPS_CODE = """
import jax, jax.numpy as jnp
from diffusers import FlaxAutoencoderKL, FlaxUNet2DConditionModel
from jax_aug import sharding
from jax_aug.diffusion import tiny
from jax_aug.plan import compile as plan_compile, targets

target = targets.resolve("tpu:v5e-4")
mesh = sharding.make_mesh(target.devices)
data, rep = sharding.data_sharding(mesh), sharding.replicated_sharding(mesh)
unet, vae = FlaxUNet2DConditionModel(**tiny.UNET_CONFIG), FlaxAutoencoderKL(**tiny.VAE_CONFIG)
key = jax.random.key(0)
sds = lambda shape, dtype, s: jax.ShapeDtypeStruct(shape, dtype, sharding=s)
with_rep = lambda tree: sharding.with_sharding(jax.eval_shape(lambda t: t, tree), rep)
unet_step = plan_compile.HotStep("unet", jax.jit(lambda p, x, t, c: unet.apply({"params": p}, x, t, c).sample),
                                 (with_rep(jax.eval_shape(unet.init_weights, key)), sds((8, 4, 16, 16), jnp.float32, data),
                                  sds((8,), jnp.int32, data), sds((8, 77, tiny.TINY_HIDDEN), jnp.float32, data)), "unet")
decode = plan_compile.HotStep("decode", jax.jit(lambda p, z: vae.apply({"params": p}, z, method=vae.decode).sample),
                              (with_rep(jax.eval_shape(vae.init_weights, key)), sds((4, 4, 16, 16), jnp.float32, data)),
                              "decode")
emit({"unet": plan_compile.compile_step(unet_step, target).flops_per_device,
      "decode": plan_compile.compile_step(decode, target).flops_per_device})
"""


IMAGIC_REPLICATED_CODE = """
import jax
from pathlib import Path
from diffusers import FlaxUNet2DConditionModel
from jax_aug.diffusion import tiny
from jax_aug.plan import compile as plan_compile, hot_steps, targets
from jax_aug.study.config_files import method_config

target = targets.resolve("tpu:v5e-4")
config = method_config(Path("configs"), "imagic", "tiny")
assert config.finetune.parameter_sharding == "fsdp"
config.finetune.parameter_sharding = "replicated"
step = hot_steps.finetune_step(config, len(config.data.wnids), target, stage="finetune/imagic")  # as the study plans it
unet = jax.eval_shape(FlaxUNet2DConditionModel(**tiny.UNET_CONFIG).init_weights, jax.random.key(0))
emit([sum(x.size for x in jax.tree.leaves(unet)), plan_compile.compile_step(step, target).argument_bytes])
"""


@pytest.mark.slow
def test_tiny_config_plans_end_to_end_for_v5e_4(tmp_path, run_jax):
  # One process for the 11 tiny compiles (a process per compile, the default, costs ~4 minutes of start-ups
  # here; it is tested on retrieve.py in test_entry_scripts_plan_their_own_steps); the cached rerun below
  # takes the default path.
  proc = _run_study_plan(tmp_path, *SAMPLING_BATCH_4, "--plan_in_one_process")
  assert proc.returncode == 0, proc.stderr[-4000:]
  plan = json.loads((tmp_path / "plan" / "tpu_v5e-4" / "plan.json").read_text())
  assert plan["target"]["topology"] == "v5e:2x2" and plan["target"]["num_devices"] == 4
  assert plan["target"]["hbm_bytes_per_device"] == 16 * 2**30
  assert plan["target"]["peak_bf16_flops_per_device"] == 197e12
  steps = {s["stage"]: s for s in plan["steps"]}
  assert set(steps) == (
    {"classifier/train", "classifier/eval"}
    | {f"finetune/{m}/train" for m in FINETUNED}
    | {"sample/txt2img", "sample/img2img", "finetune/inception_v3", "retrieval/clip_text_query"}
  )
  for step in steps.values():
    assert step["fits"] is True and 0 < step["peak_bytes"] < 2**30 and step["flops_per_device"] > 0
    assert math.isclose(step["seconds_per_call"], step["flops_per_device"] / (197e12 * 0.4), rel_tol=1e-12)
  # Sampling runs on the host's 4 chips; Inception-v3 and the CLIP query on one device, as production calls them.
  assert [
    steps[s]["num_devices"]
    for s in ("classifier/train", "sample/txt2img", "finetune/inception_v3", "retrieval/clip_text_query")
  ] == [4, 4, 1, 1]
  # The donated train state comes back in place: its outputs alias its arguments.
  assert steps["classifier/train"]["alias_bytes"] > 0 and steps["classifier/eval"]["alias_bytes"] == 0
  assert "classifier/train" in proc.stdout and "fits" in proc.stdout
  # 11 steps; txt2img's denoise step is compiled alone once and reused (cached) by img2img.
  assert proc.stdout.count("plan: compiled") == 12 and "sample/img2img loop body denoise step: cached" in proc.stdout
  assert "compiling in a fresh process" not in proc.stdout

  # Imagic trains the U-Net: float32 master weights + AdamW's two moments, 12 bytes per parameter. The plan
  # lays its state out as the trainer does, split over the 4 chips (configs/common.py: "fsdp" for the
  # methods that train the U-Net); the same step with the state replicated, compiled alone, holds the 12
  # bytes on every chip. FT conditioning keeps the U-Net frozen (one float32 copy): replicated, Imagic's
  # arguments are larger by at least 2 x 4 bytes per U-Net parameter (1.82x that seen: the TPU pads the tiny
  # U-Net's many 32-wide vectors to whole tiles); split, they are smaller by at least 3/4 of 12 bytes per
  # parameter than replicated (1.64x that seen, the padding again).
  unet_params, replicated = run_jax(IMAGIC_REPLICATED_CODE)
  split = steps["finetune/imagic/train"]["argument_bytes"]
  assert 2 * 4 * unet_params <= replicated - steps["finetune/ft_conditioning/train"]["argument_bytes"], replicated
  assert 0.75 * 12 * unet_params <= replicated - split, (replicated, split, unet_params)

  # The denoise loop: PNDM's 4 steps are 5 schedule entries, Boomerang's strength 0.5 starts at entry 2 of them.
  # One iteration costs one U-Net call on the guided batch (the scheduler's arithmetic is < 1% of it), and
  # the whole txt2img call 5 of them + the VAE decoder.
  reference = run_jax(UNET_AND_DECODER_FLOPS_CODE)
  (txt_loop,), (img_loop,) = steps["sample/txt2img"]["loops"], steps["sample/img2img"]["loops"]
  assert txt_loop["trip_count"] == 5 and img_loop["trip_count"] == 3
  assert math.isclose(txt_loop["flops_per_device"], reference["unet"], rel_tol=0.01), (txt_loop, reference)
  assert math.isclose(
    steps["sample/txt2img"]["flops_per_device"], 5 * reference["unet"] + reference["decode"], rel_tol=0.01
  ), reference
  # Negative control: XLA's own count, one iteration, is 4 U-Net calls short (a realistic 2.6x error).
  uncounted = steps["sample/txt2img"]["flops_per_device"] - 4 * txt_loop["flops_per_device"]
  assert not math.isclose(uncounted, 5 * reference["unet"] + reference["decode"], rel_tol=0.5)

  # Stage counts by hand (tiny config): 6 classes x 100 synthetic train images, 10% subset = 10 per class.
  # baseline_10pct: 2 runs (the runner's train/baseline_10pct/r0, r1: one per seed) of 60 images -> 4 steps of
  # 16, validation 60 -> 2 eval steps of 32, 8 epochs; a prompt method: 2 resamples of 120 images -> 8 steps; a
  # fine-tuned one: 2 + (3 epochs + best train + best val) selection runs. Chip-hours = runs x epochs x (steps x
  # t_train + evals x t_eval) x 4 chips.
  t_train, t_eval = steps["classifier/train"]["seconds_per_call"], steps["classifier/eval"]["seconds_per_call"]
  runs = {r["method"]: r for r in plan["study"]["classifier_runs"]}
  assert runs["baseline_10pct"]["runs"] == 2
  assert math.isclose(runs["baseline_10pct"]["chip_hours"], 2 * 8 * (4 * t_train + 2 * t_eval) * 4 / 3600, rel_tol=1e-9)
  assert runs["simple_prompt"]["runs"] == 2 and runs["simple_prompt"]["train_steps_per_epoch"] == 8
  # Chosen on validation: one selection run per candidate, the chosen one reused as resample 0 (tiny: Imagic
  # keeps epochs 1..3 of its 3; FT conditioning at most epochs 1..3 + best train + best validation, an upper
  # bound as they may coincide; Boomerang's strength grid has 2 points).
  assert runs["imagic"]["runs"] == 2 + 3 - 1
  assert runs["ft_conditioning"]["runs"] == 2 + 5 - 1
  assert runs["boomerang"]["runs"] == 2 + 2 - 1
  assert math.isclose(plan["study"]["classifier_chip_hours"], sum(r["chip_hours"] for r in runs.values()))
  # Fine-tuning: the 60-image subset in batches of 4 = 15 steps, 3 epochs, 4 chips, per grid point.
  finetune = {r["method"]: r for r in plan["study"]["finetune_runs"]}
  t_imagic = steps["finetune/imagic/train"]["seconds_per_call"]
  # Two learning-rate grid points (tiny), each a full fine-tuning run.
  assert finetune["imagic"]["runs"] == 2
  assert math.isclose(finetune["imagic"]["chip_hours"], 2 * 3 * 15 * t_imagic * 4 / 3600, rel_tol=1e-9)
  # Sampling: 12 images per class x 6 classes in batches of 4 = 18 calls per set on the host's 4 chips; a
  # prompt method 1 set, Imagic one per kept checkpoint (3), Boomerang one per strength: 0.5 re-runs 3 entries
  # (the compiled call), 0.75 re-runs 4, one more U-Net iteration.
  sampling = {r["method"]: r for r in plan["study"]["sampling_runs"]}
  t_txt, peak = steps["sample/txt2img"]["seconds_per_call"], 197e12 * 0.4
  assert math.isclose(sampling["simple_prompt"]["chip_hours"], 18 * t_txt * 4 / 3600, rel_tol=1e-9)
  assert sampling["imagic"]["sets"] == 3
  assert math.isclose(sampling["imagic"]["chip_hours"], 3 * 18 * t_txt * 4 / 3600, rel_tol=1e-9)
  t_img = steps["sample/img2img"]["seconds_per_call"]
  assert math.isclose(
    sampling["boomerang"]["chip_hours"], 18 * (2 * t_img + img_loop["flops_per_device"] / peak) * 4 / 3600, rel_tol=1e-9
  )
  # Inception-v3: subset + validation (120 images) in batches of 16 = 8 calls on 1 device; CLIP: 6 queries, 1 call.
  features = {r["stage"]: r for r in plan["study"]["feature_runs"]}
  assert features["finetune/inception_v3"]["calls"] == 8 and features["retrieval/clip_text_query"]["calls"] == 1
  assert math.isclose(
    features["finetune/inception_v3"]["chip_hours"],
    8 * steps["finetune/inception_v3"]["seconds_per_call"] / 3600,
    rel_tol=1e-9,
  )
  assert math.isclose(
    plan["study"]["chip_hours"],
    plan["study"]["classifier_chip_hours"]
    + sum(r["chip_hours"] for r in finetune.values())
    + sum(r["chip_hours"] for r in sampling.values())
    + sum(r["chip_hours"] for r in features.values()),
  )
  assert plan["per_host"]["hosts"] == 1

  # Second run, the default way (a process per uncached step): every step comes from the cache but the CLIP
  # query, whose entry is removed first. A fresh process (the same command + --plan_stage) compiles that step
  # alone and writes its entry back (its output comes through this one's); the parent reads it, and the plan
  # is the same.
  cache = tmp_path / "plan" / "tpu_v5e-4" / "plan_cache"
  entries = {path.name: path.read_text() for path in cache.glob("*.json")}
  (query_entry,) = [name for name, text in entries.items() if json.loads(text).get("stage") == "retrieval/clip_text_query"]
  (cache / query_entry).unlink()
  again = _run_study_plan(tmp_path, *SAMPLING_BATCH_4)
  assert again.returncode == 0, again.stderr[-4000:]
  assert again.stdout.count(": compiling in a fresh process") == 1
  assert "retrieval/clip_text_query (" in again.stdout.split(": compiling in a fresh process")[0].splitlines()[-1]
  assert again.stdout.count("plan: compiled") == 1 and "plan: compiled retrieval/clip_text_query" in again.stdout
  assert again.stdout.count("cached") == 10
  assert {path.name for path in cache.glob("*.json")} == set(entries)
  replan = json.loads((tmp_path / "plan" / "tpu_v5e-4" / "plan.json").read_text())
  assert [{k: v for k, v in s.items() if k != "compile_seconds"} for s in replan["steps"]] == [
    {k: v for k, v in s.items() if k != "compile_seconds"} for s in plan["steps"]
  ]


def test_config_that_cannot_fit_is_refused_naming_the_stage(tmp_path):
  # A 224 px batch of 65536 needs about 48 GiB of temporaries per v5e chip (16 GiB). The tiny sampling batch
  # of 2 cannot be split over the host's 4 chips: the engine's own refusal is reported for that stage.
  proc = _run_study_plan(
    tmp_path,
    "--config.classifier.global_batch_size=65536",
    "--config.classifier.input.image_size=224",
    "--config.methods=baseline_10pct,simple_prompt",
  )
  assert proc.returncode != 0
  assert "classifier/train does not fit on tpu:v5e-4" in proc.stderr
  assert (
    "sample/txt2img cannot run on tpu:v5e-4: the sampling engine refuses batch_size=2: not a multiple of"
    " the 4 devices of one tpu:v5e-4 host"
  ) in proc.stderr
  assert "DOES NOT FIT: classifier/train" in proc.stdout and "CANNOT RUN: sample/txt2img" in proc.stdout
  plan = json.loads((tmp_path / "plan" / "tpu_v5e-4" / "plan.json").read_text())
  assert plan["does_not_fit"] == ["classifier/train"] and plan["cannot_run"] == ["sample/txt2img"]


FSDP_PLAN_CODE = """
from configs.base import classifier
from jax_aug.plan import compile as plan_compile, hot_steps, targets

target = targets.resolve("tpu:v5e-4")
out = {}
for mode in ("replicated", "fsdp"):
  config = classifier.get("tiny")
  # 3 stages of 64..256 filters: the kernels hold most of the state's bytes, as in ResNet-50 (on the tiny
  # 2-stage, 8-filter net TPU tile padding of replicated BN vectors would dominate).
  config.model.num_filters, config.model.stage_sizes = 64, (1, 1, 1)
  config.parameter_sharding = mode
  train = hot_steps.classifier_steps(config, 8, target)[0]
  out[mode] = plan_compile.compile_step(train, target).argument_bytes
emit(out)
"""


def test_fsdp_cuts_per_device_argument_bytes_about_4x(run_jax):
  out = run_jax(FSDP_PLAN_CODE)
  ratio = out["replicated"] / out["fsdp"]
  # Not exactly 4: the batch's share, BN vectors (replicated, too small to split) and tile padding remain.
  assert 3.5 < ratio <= 4.0, out


HELD_DEVICES_CODE = """
from pathlib import Path
import jax
from configs.base import classifier
from jax_aug.plan import hot_steps, targets
from jax_aug.study.config_files import method_config

target = targets.resolve("tpu:v5e-4")
spans = lambda step: sorted({len(leaf.sharding.device_set) for leaf in jax.tree.leaves(step.args)})
out = {}
for held in (0, 1):
  config = classifier.get("tiny")
  config.num_devices = held
  method = method_config(Path("configs"), "imagic", "tiny")
  method.finetune.num_devices = held
  out[held] = {"classifier": [spans(step) for step in hot_steps.classifier_steps(config, 8, target)],
               "finetune": spans(hot_steps.finetune_step(method, 2, target))}
emit(out)
"""


def test_the_plan_holds_a_run_to_the_devices_its_config_names(run_jax):
  # classifier.num_devices and finetune.num_devices (the mini world's): the planned steps' arguments lie on the
  # devices the run would train on, the first N of the target's 4, as jax_aug.sharding.run_devices picks them.
  out = run_jax(HELD_DEVICES_CODE)
  assert out["0"] == {"classifier": [[4], [4]], "finetune": [4]}
  assert out["1"] == {"classifier": [[1], [1]], "finetune": [1]}


FSDP_TRAIN_CODE = """
import jax, jax.numpy as jnp, numpy as np
from configs.base import classifier
from jax_aug import sharding
from jax_aug.classifier import model as model_lib, steps

config = classifier.get("tiny")
config.model.num_filters = 32
mesh = sharding.make_mesh()
model = model_lib.build_model(config.model, num_classes=8)
tx = steps.make_optimizer(config.optimizer)
size = config.input.image_size
rng = np.random.default_rng(0)
batches = [{"image": rng.normal(size=(16, size, size, 3)).astype(np.float32),
            "label": rng.integers(0, 8, 16).astype(np.int32)} for _ in range(3)]

def train(mode, reset_optimizer=False):
  layout = steps.state_shardings(model, tx, mesh, size, mode)
  state = jax.jit(lambda k: steps.create_train_state(model, tx, k, size), out_shardings=layout)(jax.random.key(0))
  fresh_opt = state.opt_state
  step = steps.jit_train_step(model, tx, mesh, layout)
  for b in batches:
    if reset_optimizer:
      state = state.replace(opt_state=jax.tree.map(jnp.copy, fresh_opt))
    state, _ = step(state, sharding.global_batch(b, mesh))
  counts = steps.jit_eval_step(model, 8, mesh, layout)(
      state.variables(), sharding.global_batch({**batches[0], "mask": np.ones(16, np.int32)}, mesh))
  kernels = [x for path, x in jax.tree_util.tree_leaves_with_path(state.params) if path[-1].key == "kernel"]
  split = [x for x in kernels if x.sharding.spec != jax.sharding.PartitionSpec()]
  return jax.device_get(state.params), jax.device_get(counts), len(split), len(kernels)

replicated, counts_r, split_r, n = train("replicated")
fsdp, counts_f, split_f, _ = train("fsdp")
buggy, _, _, _ = train("fsdp", reset_optimizer=True)
diff = lambda a, b: max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
emit({"devices": jax.device_count(), "diff": diff(replicated, fsdp), "bug_diff": diff(replicated, buggy),
      "counts_equal": all(np.array_equal(counts_r[k], counts_f[k]) for k in counts_r),
      "split_replicated": split_r, "split_fsdp": split_f, "kernels": n})
"""


@pytest.mark.slow
def test_fsdp_training_gives_the_parameters_of_replicated_training(run_jax):
  out = run_jax(FSDP_TRAIN_CODE, devices=4)
  assert out["devices"] == 4
  # Every conv / fc kernel is split over the 4 devices (BN vectors and the fc bias are too small to be).
  assert out["split_replicated"] == 0 and out["split_fsdp"] == out["kernels"] > 0
  # Same math, different reduction order of the gathered gradients: float32 rounding only.
  assert out["diff"] < 1e-5, out
  assert out["counts_equal"]
  # Negative control: a sharded update that loses the momentum buffer (a realistic resharding bug) moves
  # the parameters far beyond the tolerance.
  assert out["bug_diff"] > 1e-3, out


def test_target_names_map_to_cloud_tpu_topologies_and_bad_names_are_refused():
  from jax_aug.plan import targets

  # Cloud TPU slice names: v5e / v6e count chips, v4 / v5p count TensorCores (2 per chip).
  assert targets.tpu_topology("tpu:v5e-4") == "v5e:2x2"
  assert targets.tpu_topology("tpu:v5e-16") == "v5e:4x4"
  assert targets.tpu_topology("tpu:v4-32") == "v4:2x2x4"
  assert targets.tpu_topology("tpu:v5p-8") == "v5p:2x2x1"
  for bad, says in [
    ("tpu:v5e-3", "sizes"),
    ("tpu:v9-8", "expected 'local'"),
    ("gpu:h100", "expected 'local'"),
    ("tpu:v4-3", "sizes"),
  ]:
    try:
      targets.tpu_topology(bad)
    except ValueError as e:
      assert bad in str(e) and says in str(e)
    else:
      raise AssertionError(f"{bad} was accepted")


HOLD_LIBTPU_CODE = """
import sys, time, jax
jax.devices()  # JAX_PLATFORMS unset: jax probes libtpu, which takes /tmp/libtpu_lockfile, then uses the CPU
print(jax.default_backend(), flush=True)
time.sleep(120)
"""


def test_plan_works_while_another_process_holds_libtpu(tmp_path):
  env = {k: v for k, v in _jax_env(1).items() if k != "JAX_PLATFORMS"}
  holder = subprocess.Popen(
    [sys.executable, "-c", HOLD_LIBTPU_CODE],
    env=env,
    cwd=REPO_ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
    text=True,
  )
  try:
    # With libtpu installed and JAX_PLATFORMS unset, an ordinary run still computes on the CPU.
    assert holder.stdout.readline().strip() == "cpu"
    proc = subprocess.run(
      [sys.executable, "-c", "from jax_aug.plan import targets; print(len(targets.resolve('tpu:v5e-4').devices))"],
      env=_jax_env(1),
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "4", proc.stderr[-3000:]
  finally:
    holder.kill()
    holder.wait()


PER_HOST_CODE = """
from configs import tiny
from jax_aug.plan import study, targets
config = tiny.get_config()
work = {hosts: study.per_host_work(config, hosts) for hosts in (1, 4)}
config.method_configs.retrieval.download.distributor = "pyspark"
emit({"hosts": {name: targets.resolve(name).num_hosts for name in ("tpu:v5e-4", "tpu:v5e-16", "tpu:v4-32", "tpu:v5p-8")},
      "work": work, "pyspark": study.per_host_work(config, 4)["downloads"]})
"""


def test_per_host_work_of_a_multi_host_target(run_jax):
  out = run_jax(PER_HOST_CODE)
  # libtpu's topologies: v5e:4x4 and v4:2x2x4 span 4 hosts of 4 chips, v5e:2x2 and v5p:2x2x1 one.
  assert out["hosts"] == {"tpu:v5e-4": 1, "tpu:v5e-16": 4, "tpu:v4-32": 4, "tpu:v5p-8": 1}
  one, four = out["work"]["1"], out["work"]["4"]
  # Tiny, by hand: 12 images per class x 6 classes in batches of 2 = 36 sampling batches, dealt round robin:
  # 9 per host of 4 (18 images), all 36 on one host.
  sampling = {w["method"]: w for w in four["sampling"]}
  assert sampling["simple_prompt"] == {
    "method": "simple_prompt",
    "batches_per_set": 36,
    "batches_per_host": 9,
    "images_per_host": 18,
  }
  assert {w["method"]: w["images_per_host"] for w in one["sampling"]}["simple_prompt"] == 72
  # Fine-tuning: one model of all 6 classes on every host; the 60-image subset in global batches of 4 = 15
  # steps per epoch, each host loading 1 example per step (of 4). Classifier: 16 / 4 examples per host.
  finetune = {w["method"]: w for w in four["finetune"]}
  assert finetune["imagic"] == {
    "method": "imagic",
    "classes_per_host": 6,
    "steps_per_epoch_per_host": 15,
    "examples_per_step_per_host": 1.0,
  }
  assert four["classifier"] == {"examples_per_train_step_per_host": 4.0}
  # Downloads (the study's tiny retrieval keeps 12 per class): 6 x 12 at least, at most 6 x round(6 x 1.4 x 12)
  # = 606 candidates, all on one host with img2dataset's multiprocessing distributor, ceil(606 / 4) = 152 per
  # host with pyspark.
  assert four["downloads"] == {
    "distributor": "multiprocessing",
    "candidates_at_least": 72,
    "candidates_at_most": 606,
    "candidates_at_most_per_host": 606,
  }
  assert out["pyspark"]["candidates_at_most_per_host"] == 152


def test_a_compile_process_for_an_unknown_stage_is_refused(tmp_path):
  # What a --plan run starts for each uncached step is run_study.py ... --plan_stage=<stage> (exercised by the
  # second run of test_tiny_config_plans_end_to_end_for_v5e_4); a stage the plan does not have is named.
  unknown = _run_study_plan(tmp_path, "--plan_stage=sample/nothing")
  assert unknown.returncode != 0 and "no hot step named 'sample/nothing' in this plan" in unknown.stderr
  assert not (tmp_path / "plan" / "tpu_v5e-4" / "plan_cache").exists()


def test_entry_scripts_plan_their_own_steps(tmp_path):
  def run(script, config, *flags):
    return subprocess.run(
      [sys.executable, script, f"--config={config}", f"--workdir={tmp_path / script}", "--plan=tpu:v5e-4", *flags],
      env=_jax_env(1),
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=1800,
    )

  # sample.py: the tiny batch of 2 cannot be split over 4 chips; the engine's refusal, nothing compiled.
  sample = run("sample.py", "configs/methods/simple_prompt.py:tiny")
  assert sample.returncode != 0 and "plan: compil" not in sample.stdout
  assert (
    "sample.py --plan: sample/txt2img cannot run on tpu:v5e-4: the sampling engine refuses batch_size=2" in sample.stderr
  )
  # retrieve.py: the CLIP text query, 64 prompts on one chip.
  retrieve = run("retrieve.py", "configs/methods/retrieval.py:tiny")
  assert retrieve.returncode == 0, retrieve.stderr[-3000:]
  # By default each uncached step is compiled by a process of its own (the same command + --plan_stage), whose
  # output comes through this one's; the parent reads the result from the cache.
  assert retrieve.stdout.count(": compiling in a fresh process") == 1
  assert retrieve.stdout.count("plan: compiled retrieval/clip_text_query") == 1
  plan = json.loads((tmp_path / "retrieve.py" / "plan" / "tpu_v5e-4" / "plan.json").read_text())
  assert [(s["stage"], s["num_devices"], s["fits"]) for s in plan["steps"]] == [("retrieval/clip_text_query", 1, True)]


CLIP_CLUSTER_FEATURES_CODE = """
import ml_collections
from jax_aug.plan import compile as plan_compile, hot_steps, targets

target = targets.resolve("tpu:v5e-4")
block = ml_collections.ConfigDict({"features": "clip", "clip_model": CLIP_FOLDER, "batch_size": 256, "image_size": 75})
step = hot_steps.cluster_features_step(block, target)
cost = plan_compile.compile_step(step, target)
emit({"stage": step.stage, "num_devices": cost.num_devices, "flops": cost.flops_per_device})
"""


def test_clip_cluster_features_are_planned_as_production_calls_them(tmp_path, run_jax):
  """FT cluster conditioning on CLIP features (the mini world's): the plan compiles the CLIP image tower on one
  device for a batch of `batch_size`, its FLOPs within 10% of a hand count of the tiny CLIP's matmuls."""
  from mini_world_support import random_clip

  from jax_aug.diffusion.loading import load_clip_tokenizer
  from jax_aug.mini_world import models
  from jax_aug.mini_world.train_clip import export_clip

  clip, params = random_clip(0)
  folder = export_clip(clip, params, load_clip_tokenizer(), tmp_path / "clip")
  result = run_jax(f"CLIP_FOLDER = {str(folder)!r}\n" + CLIP_CLUSTER_FEATURES_CODE)
  v = models.CLIP_VISION
  h, inner, layers = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"]
  patches = (v["image_size"] // v["patch_size"]) ** 2
  tokens = patches + 1  # the class token
  per_image = (
    2 * patches * 3 * v["patch_size"] ** 2 * h  # patch embedding
    + layers * (2 * tokens * (4 * h * h + 2 * h * inner) + 2 * 2 * tokens * tokens * h)  # projections, MLP, attention
    + 2 * h * models.PROJECTION_DIM  # the pooled token's projection
  )
  assert result["stage"] == "finetune/clip_image_features" and result["num_devices"] == 1
  assert math.isclose(result["flops"], 256 * per_image, rel_tol=0.1), (result["flops"], 256 * per_image)
