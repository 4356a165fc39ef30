"""The mini world's training machinery: a stage resumed from its checkpoint equals an unbroken run; the
fitted heads load through the project's loaders and act as fitted (aesthetic: a known linear function;
safety checker: diffusers' own module flags what the cosine rule says)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import serialization
from mini_world_support import random_clip, random_export

from jax_aug.mini_world import heads, models
from jax_aug.mini_world.stage_loop import CHECKPOINT, Stage, run_stage
from jax_aug.mini_world.weights import load_params, save_params


def _toy_stage(steps, checkpoint_every):
  target = jnp.arange(3.0)
  tx = optax.adam(0.1)

  def init():
    params = {"w": jnp.zeros(3)}
    return {"params": params, "opt_state": tx.init(params)}

  @jax.jit
  def step(state, batch, key):
    noise = jax.random.normal(key, (3,)) * 0.01

    def loss_fn(p):
      return jnp.sum((p["w"] * batch["x"] - target - noise) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"])
    return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, {"loss": loss}

  def batch(step_index):
    return {"x": np.random.default_rng([0, step_index]).uniform(0.5, 1.5, 3).astype(np.float32)}

  return Stage(name="toy", steps=steps, init=init, step=step, batch=batch, log_every=2, checkpoint_every=checkpoint_every)


class _Killed(Exception):
  pass


def _killed_at(stage, step):
  """`stage` whose process dies when it asks for the batch of `step` (after whatever it logged and saved)."""
  import dataclasses

  def batch(step_index):
    if step_index == step:
      raise _Killed
    return stage.batch(step_index)

  return dataclasses.replace(stage, batch=batch)


def _rows(folder):
  rows = [json.loads(line) for line in (folder / "toy" / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def test_resumed_stage_equals_unbroken_run(tmp_path):
  key = jax.random.key(0)
  unbroken = run_stage(_toy_stage(8, 100), tmp_path / "a", key)
  # killed at step 7: it logged steps 2, 4, 6 and checkpointed step 4
  with pytest.raises(_Killed):
    run_stage(_killed_at(_toy_stage(8, 4), 6), tmp_path / "b", key)
  saved = serialization.msgpack_restore((tmp_path / "b" / "toy" / CHECKPOINT).read_bytes())
  assert int(saved["step"]) == 4
  assert [row["step"] for row in _rows(tmp_path / "b")] == [2, 4, 6]
  resumed = run_stage(_toy_stage(8, 4), tmp_path / "b", key)
  np.testing.assert_array_equal(np.asarray(resumed["params"]["w"]), np.asarray(unbroken["params"]["w"]))
  # the killed run's row of step 6 was dropped and logged again: the rows are the unbroken run's, bit for bit
  assert _rows(tmp_path / "b") == _rows(tmp_path / "a")
  # negative control: a different key changes the result, so the equality above is not vacuous
  other = run_stage(_toy_stage(8, 100), tmp_path / "c", jax.random.key(1))
  assert not np.array_equal(np.asarray(other["params"]["w"]), np.asarray(unbroken["params"]["w"]))


def test_a_resume_with_another_recipe_is_refused_and_other_intervals_are_not(tmp_path):
  import dataclasses

  import ml_collections

  toy = _toy_stage(8, 4)
  functions = {f: getattr(toy, f) for f in ("init", "step", "batch")}

  def configured(**changes):
    block = dict(steps=8, lr=0.1, photometric=dict(brightness=(0.6, 1.2)), log_every=2, eval_every=4, checkpoint_every=4)
    return Stage.configured("toy", ml_collections.ConfigDict({**block, **changes}), **functions)

  with pytest.raises(_Killed):
    run_stage(_killed_at(configured(), 6), tmp_path, jax.random.key(0))
  with pytest.raises(ValueError) as raised:
    run_stage(configured(lr=0.2, photometric=dict(brightness=(0.5, 1.2))), tmp_path, jax.random.key(0))
  assert "was trained with another recipe (lr: 0.1 -> 0.2, photometric: {'brightness': [0.6, 1.2]} -> " in str(raised.value)
  assert int(serialization.msgpack_restore((tmp_path / "toy" / CHECKPOINT).read_bytes())["step"]) == 4  # untouched
  # the intervals may change: resumed and finished with other log and checkpoint intervals
  finished = run_stage(configured(log_every=4, checkpoint_every=2), tmp_path, jax.random.key(0))
  unbroken = run_stage(dataclasses.replace(toy, checkpoint_every=100), tmp_path / "unbroken", jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(finished["params"]["w"]), np.asarray(unbroken["params"]["w"]))
  # a finished stage asked for more steps is refused too (its cosine schedule would have been another)
  with pytest.raises(ValueError, match=r"steps: 8 -> 12"):
    run_stage(configured(steps=12), tmp_path, jax.random.key(0))


def test_a_stage_that_turns_non_finite_stops_and_keeps_its_last_finite_checkpoint(tmp_path):
  import dataclasses

  stage = _toy_stage(12, 3)
  healthy = stage.batch

  def batch(step_index):  # from step 7 on the data holds a NaN: so do the loss and, after the update, the weights
    out = healthy(step_index)
    if step_index >= 7:
      out["x"][0] = np.nan
    return out

  with pytest.raises(FloatingPointError) as raised:
    run_stage(dataclasses.replace(stage, batch=batch), tmp_path, jax.random.key(0))
  # Steps 1..8 are logged in pairs; the pair (7, 8) has the NaN loss. The step-6 checkpoint stays.
  assert str(raised.value) == (
    "mini-world stage 'toy': the mean loss of the steps up to 8 is nan; stopped (the checkpoint of step 6 is"
    " kept, nothing non-finite is saved)"
  )
  saved = serialization.msgpack_restore((tmp_path / "toy" / CHECKPOINT).read_bytes())
  assert int(saved["step"]) == 6 and np.all(np.isfinite(saved["state"]["params"]["w"]))
  assert not (tmp_path / "toy" / "done.json").exists()
  # A state that turns non-finite between log lines is refused at its checkpoint: log every 5, checkpoint every 3.
  with pytest.raises(FloatingPointError, match=r"the state after step 9 holds non-finite values in \d+ arrays"):
    run_stage(dataclasses.replace(stage, batch=batch, log_every=5), tmp_path / "b", jax.random.key(0))


def test_aesthetic_head_recovers_a_linear_score_and_loads(tmp_path):
  from safetensors.numpy import save

  from jax_aug.retrieval.aesthetic import load_aesthetic_head

  rng = np.random.default_rng(0)
  x = rng.normal(size=(3000, 8)).astype(np.float32)
  w, b = rng.normal(size=8), 5.0
  y = (x @ w + b + rng.normal(0, 0.01, 3000)).astype(np.float32)
  tensors, report = heads.fit_aesthetic(x, y, ridge=1e-6, holdout=500)
  np.testing.assert_allclose(tensors["weight"][0], w, atol=2e-3)
  assert report["holdout_r2"] > 0.999
  path = tmp_path / "aesthetic.safetensors"
  path.write_bytes(save(tensors))
  np.testing.assert_allclose(load_aesthetic_head(path)(x[:5]), x[:5] @ w + b, atol=0.02)


def test_fit_safety_on_hand_made_embeddings():
  # NSFW along +x, the rest spread over the upper half plane; last 4 rows are the holdout
  angles = np.array([0.0, 0.05, -0.05, 1.0, 1.5, 2.0, 2.5, 3.0, 0.02, 0.6, 1.2, 2.2])
  embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 3.0  # not unit: fit_safety normalises
  is_nsfw = np.array([True, True, True, False, False, False, False, False, True, False, False, False])
  direction, threshold, report = heads.fit_safety(embeddings, is_nsfw, false_alarm=0.0, holdout=4)
  np.testing.assert_allclose(direction, [1.0, 0.0], atol=1e-6)
  assert threshold == pytest.approx(np.cos(1.0))  # the largest cosine of a non-NSFW training row
  # holdout: the NSFW row at 0.02 rad is flagged, the row at 0.6 rad (cos 0.825 > cos 1.0) too
  assert report["holdout_nsfw_recall"] == 1.0 and report["holdout_false_alarm"] == pytest.approx(1 / 3)


@pytest.mark.slow
def test_safety_checker_params_flag_what_the_cosine_rule_flags(tmp_path):
  from jax_aug.mini_world.train_clip import pixel_values

  clip, params = random_clip(0)
  rng = np.random.default_rng(1)
  images = np.concatenate(
    [
      np.broadcast_to(rng.integers(0, 256, (3, 1, 1, 3), dtype=np.uint8), (3, 32, 32, 3)),
      rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8),
    ]
  )
  pixels = pixel_values(jnp.asarray(images))
  features = np.asarray(clip.get_image_features(pixels, params=params))
  unit = features / np.linalg.norm(features, axis=1, keepdims=True)
  direction, threshold = unit[0], 0.9
  path = tmp_path / "safety.safetensors"
  save_params(path, heads.safety_checker_params(params, direction, threshold))
  checker = heads.build_safety_checker()
  # as the engine runs it: the pipeline's feature extractor (x7 nearest upscaling to 224 px) then the checker
  clip_input = models.safety_feature_extractor()(list(images), return_tensors="np").pixel_values
  assert clip_input.shape == (6, 3, 224, 224)
  safety_params = load_params(path)
  flags = np.asarray(checker(clip_input, params=safety_params))

  def checker_embeddings(p):
    # the module takes channels-last pixels (the checker's __call__ transposes before applying it)
    return np.asarray(
      checker.module.apply(
        {"params": p},
        jnp.transpose(jnp.asarray(clip_input), (0, 2, 3, 1)),
        method=lambda m, x: m.visual_projection(m.vision_model(x)[1]),
      )
    )

  # the 224 px tower computes the 32 px CLIP's image features (float32 summation order aside)
  np.testing.assert_allclose(checker_embeddings(safety_params), features, rtol=1e-4, atol=1e-4)
  # negative control: the patch kernel repeated without the 1/49 is far outside that tolerance
  kernel = safety_params["vision_model"]["vision_model"]["embeddings"]["patch_embedding"]["kernel"]
  wrong = jax.tree.map(lambda x: x, safety_params)
  wrong["vision_model"]["vision_model"]["embeddings"]["patch_embedding"]["kernel"] = kernel * 49
  assert np.max(np.abs(checker_embeddings(wrong) - features)) > 1e-2
  # independent: numpy cosine to the direction, diffusers' rounding of the score to 3 decimals
  expected = np.round(unit @ direction - threshold, 3) > 0
  np.testing.assert_array_equal(flags, expected)
  assert flags[0] and not flags.all()


@pytest.mark.slow
def test_assembled_sd_loads_through_load_sd_with_the_exported_weights(tmp_path):
  """Exported weights (random here) -> assemble_sd -> load_sd gives back exactly those parameters."""
  from flax.traverse_util import flatten_dict

  from jax_aug.diffusion.loading import load_sd
  from jax_aug.mini_world.assemble import assemble_sd

  params = random_export(tmp_path / "export")
  sd = load_sd(assemble_sd(tmp_path / "export", tmp_path / "sd"))
  assert sd.resolution == 32 and sd.vae.config.scaling_factor == 0.5
  for name, expected in (
    ("unet", params["unet"]),
    ("vae", params["vae"]),
    ("text_encoder", {"text_model": params["clip"]["text_model"]}),
  ):
    got = flatten_dict(sd.params[name])
    for path, value in flatten_dict(expected).items():
      np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(value), err_msg=f"{name} {path}")
  assert float(sd.params["safety_checker"]["concept_embeds_weights"][0]) == pytest.approx(0.9)


@pytest.mark.slow
def test_prepared_world_serves_retrieval_from_the_corpus_and_refuses_damaged_weights(tmp_path):
  """prepare_world: corpus + target drawn, SD assembled, the index over the corpus's CLIP embeddings whose
  image_path reads the corpus image it was embedded from; damaged weights and another world are refused."""
  from jax_aug.io import load_image_file, read_json
  from jax_aug.mini_world import corpus, world
  from jax_aug.mini_world.assemble import WEIGHTS
  from jax_aug.retrieval.clip_model import embed_images, load_clip
  from jax_aug.retrieval.index import LocalIndex

  export = tmp_path / "export"
  random_export(export)
  paths = world.prepare_world(tmp_path / "world", export, corpus_size=120)
  assert read_json(paths.target / "mini_world.json")["counts"]["val"]["n01443537"] == 50
  assert (paths.sd / "model_index.json").is_file()
  # every indexed row's image_path is the corpus item of that row; an item's own embedding finds it first
  index = LocalIndex(paths.index, columns=list(world.INDEX_COLUMNS))
  assert index.index.ntotal == 120
  item = 37
  image = load_image_file(paths.corpus_images / corpus.image_path(item))
  query = embed_images(load_clip(str(export / "clip")), [np.asarray(image)])[0]
  best = index.search(query, 3, deduplicate=False)[0]
  metadata = corpus.read_metadata(paths.corpus).slice(item, 1).to_pylist()[0]
  assert best.metadata["image_path"] == corpus.image_path(item) and best.metadata["caption"] == metadata["caption"]
  assert best.metadata["concept"] == metadata["concept"]
  # prepared once: a second call returns at once and rewrites nothing
  stamp = (paths.root / world.WORLD_FILE).stat().st_mtime_ns
  assert world.prepare_world(tmp_path / "world", export, corpus_size=120) == paths
  assert (paths.root / world.WORLD_FILE).stat().st_mtime_ns == stamp
  # the same weights in another folder (another clone of the package): the same world, nothing rebuilt; weights
  # under another manifest (here the same files, the manifest re-serialised) are another world
  import shutil

  copy = tmp_path / "copy"
  shutil.copytree(export, copy)
  assert world.prepare_world(tmp_path / "world", copy, corpus_size=120) == paths
  assert (paths.root / world.WORLD_FILE).stat().st_mtime_ns == stamp
  (copy / world.MANIFEST).write_text((copy / world.MANIFEST).read_text() + "\n")
  with pytest.raises(ValueError, match="holds .parts of. the mini world"):
    world.prepare_world(tmp_path / "world", copy, corpus_size=120)
  with pytest.raises(ValueError, match="holds .parts of. the mini world"):
    world.prepare_world(tmp_path / "world", export, corpus_size=121)
  assert not (paths.root / world.PREPARING_FILE).exists()
  # a preparation killed after the target (its record left behind) is completed only with the same record
  (paths.root / world.WORLD_FILE).rename(paths.root / world.PREPARING_FILE)
  with pytest.raises(ValueError, match="holds .parts of. the mini world"):
    world.prepare_world(tmp_path / "world", export, corpus_size=121)
  assert world.prepare_world(tmp_path / "world", export, corpus_size=120) == paths
  assert (paths.root / world.WORLD_FILE).exists() and not (paths.root / world.PREPARING_FILE).exists()
  # a damaged weight file is named before anything is drawn
  unet = export / "unet" / WEIGHTS
  unet.write_bytes(unet.read_bytes()[:-1] + b"\0")
  with pytest.raises(ValueError, match=r"unet/weights.safetensors \(unet\) has sha256 [0-9a-f]{64}, its manifest says"):
    world.prepare_world(tmp_path / "other", export, corpus_size=120)
  assert not (tmp_path / "other").exists()
  with pytest.raises(FileNotFoundError, match="no mini-world weights at"):
    world.prepare_world(tmp_path / "other", tmp_path / "nowhere")


def test_photometric_jitter_scales_gains_and_gamma_as_written():
  from jax_aug.mini_world.train_clip import photometric

  values = np.arange(256, dtype=np.uint8)
  images = np.broadcast_to(values[None, :, None, None], (2, 256, 1, 3)).copy()
  # brightness alone (a one-point range): x * 0.4 rounded (no value lands on a half)
  out = photometric(images, np.random.default_rng(0), brightness=(0.4, 0.4), channel_gain=0.0, gamma=(1.0, 1.0))
  np.testing.assert_array_equal(out[0, :, 0, 0], [int(x * 0.4 + 0.5) for x in range(256)])
  # gamma alone: round(255 (x / 255)^2); 128 -> 64.25 -> 64, 255 stays 255, values are clipped at 1 first
  out = photometric(images, np.random.default_rng(0), brightness=(1.0, 1.0), channel_gain=0.0, gamma=(2.0, 2.0))
  assert (out[0, 128, 0, 0], out[0, 255, 0, 0], out[0, 0, 0, 0]) == (64, 255, 0)
  out = photometric(images, np.random.default_rng(0), brightness=(1.5, 1.5), channel_gain=0.0, gamma=(1.0, 1.0))
  assert out[0, 200, 0, 0] == 255 and out[0, 100, 0, 0] == 150
  # per-channel gains stay within 1 +- 0.1, differ between channels and images, and are a function of the draws
  out = photometric(images, np.random.default_rng(3), brightness=(1.0, 1.0), channel_gain=0.1, gamma=(1.0, 1.0))
  gains = out[:, 200, 0, :] / 200.0
  assert np.all(np.abs(gains - 1.0) <= 0.1 + 0.5 / 200) and len(np.unique(gains)) == 6
  again = photometric(images, np.random.default_rng(3), brightness=(1.0, 1.0), channel_gain=0.1, gamma=(1.0, 1.0))
  np.testing.assert_array_equal(out, again)


def test_augment_is_a_flip_and_an_edge_padded_shift():
  from jax_aug.mini_world.train_clip import augment

  images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
  out = augment(images, np.random.default_rng(1), max_shift=2)
  assert out.shape == images.shape and out.dtype == np.uint8
  shifted_or_flipped = 0
  for image, result in zip(images, out):
    candidates = [
      np.pad(view, ((2, 2), (2, 2), (0, 0)), mode="edge")[dy : dy + 8, dx : dx + 8]
      for view in (image, image[:, ::-1])
      for dy in range(5)
      for dx in range(5)
    ]
    assert any(np.array_equal(result, c) for c in candidates)
    shifted_or_flipped += not np.array_equal(result, image)
  assert shifted_or_flipped > 8  # 1 - 1/50 of the draws change the image
  same = augment(images, np.random.default_rng(1), max_shift=2)
  np.testing.assert_array_equal(out, same)  # a pure function of the generator's state


@pytest.mark.slow
def test_installed_weights_are_the_manifests_files_and_the_size_budget_is_enforced(tmp_path):
  from jax_aug.mini_world import world

  random_export(tmp_path / "export")
  with pytest.raises(ValueError, match=r"take [\d,]+ bytes; the package ships at most 1,000,000"):
    world.install_weights(tmp_path / "export", tmp_path / "assets", max_bytes=10**6)
  assert not (tmp_path / "assets").exists()
  (tmp_path / "export" / "stray.bin").write_bytes(b"not listed")  # only what the manifest lists is shipped
  installed = world.install_weights(tmp_path / "export", tmp_path / "assets")
  manifest = world.verify_weights(installed)
  listed = {f for entry in manifest.values() for f in entry["files"]} | {"manifest.json"}
  assert {str(p.relative_to(installed)) for p in installed.rglob("*") if p.is_file()} == listed
  for relative in listed:
    assert (installed / relative).read_bytes() == (tmp_path / "export" / relative).read_bytes()
  # a second install replaces the first whole (no file of the old set is left)
  (installed / "unet" / "leftover").write_bytes(b"x")
  world.install_weights(tmp_path / "export", tmp_path / "assets")
  assert not (installed / "unet" / "leftover").exists()


def _record_many(out, prefix, count, start):
  from jax_aug.mini_world.train import record_export

  weights = out / "export" / f"{prefix}.bin"
  weights.write_bytes(prefix.encode())
  start.wait()  # both processes write at the same time
  for i in range(count):
    record_export(out, f"{prefix}{i}", [weights])


def test_stages_finishing_together_both_reach_the_manifest(tmp_path):
  """Two processes recording exports at once (the accelerator script fits the heads beside the U-Net): the
  manifest's read-modify-write is locked, so no stage's entry is lost."""
  import multiprocessing

  from jax_aug.io import read_json

  (tmp_path / "export").mkdir()
  context = multiprocessing.get_context("spawn")
  start = context.Barrier(2)
  workers = [context.Process(target=_record_many, args=(tmp_path, prefix, 200, start)) for prefix in ("a", "b")]
  for worker in workers:
    worker.start()
  for worker in workers:
    worker.join()
  assert [w.exitcode for w in workers] == [0, 0]
  manifest = read_json(tmp_path / "export" / "manifest.json")
  assert sorted(manifest) == sorted(f"{p}{i}" for p in "ab" for i in range(200))
