"""The sampling engine on a tiny random SD: per-item keys, devices, kill-and-restart, safety replacement,
one compilation, and bad input."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jax_aug.diffusion import conditioning, engine, methods
from jax_aug.diffusion.loading import load_sd
from jax_aug.diffusion.tiny import build_tiny_sd
from jax_aug.io import JsonlManifest
from jax_aug.metrics import TENSORBOARD_DIR

SETTINGS = engine.SamplerSettings(num_inference_steps=3)
WNIDS = ("n01443537", "n01491361")  # goldfish, tiger shark


def _requests(n_per_class=4):
  return methods.build_requests(
    "prompt", prompt_strategy="clip_templates", wnids=WNIDS, images_per_class=n_per_class, seed=0
  )


def _no_flags(images):
  return np.zeros(len(images), dtype=bool)


def _read_set(root: Path) -> tuple[list[dict], dict[str, bytes]]:
  rows = sorted(JsonlManifest(root / "manifest.jsonl").read(), key=lambda r: r["key"])
  return rows, {r["key"]: (root / r["path"]).read_bytes() for r in rows}


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
  return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny", seed=0)


@pytest.fixture(scope="module")
def model(tiny_path):
  return load_sd(tiny_path)


def test_one_compilation_for_all_prompts_with_the_models_own_checker(model, tmp_path):
  # The tiny checker's own init never fires (cosines <= 1); test_diffusion_safety.py makes one fire.
  requests = _requests(3)  # 6 images in batches of 4: the last one padded to the compiled shape
  assert len({r.prompt for r in requests}) > 2
  engine.sample_requests(
    model,
    requests,
    tmp_path,
    method="clip_prompts",
    settings=SETTINGS,
    seed=0,
    batch_size=4,
    profile_first_batch=1,
    profile_batches=1,
  )
  rows, files = _read_set(tmp_path)
  assert [r["key"] for r in rows] == sorted(r.key for r in requests)
  assert all(r["safety_rejections"] == 0 and r["attempt"] == 0 for r in rows)
  assert {r["prompt"] for r in rows} == {r.prompt for r in requests}
  assert all(np.asarray(Image.open(tmp_path / r["path"])).shape == (32, 32, 3) for r in rows)
  assert engine.get_sampler(model, SETTINGS).compilations() == 1
  metrics = JsonlManifest(tmp_path / engine.METRICS_FILE).read()
  assert [m["images"] for m in metrics] == [4, 2]
  # The same rows as TensorBoard scalars at step = batch number (read with TensorBoard's own reader).
  events = EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
  events.Reload()
  for key in ("images", "flagged", "images_per_second"):
    assert [(e.step, e.value) for e in events.Scalars(key)] == [(m["batch"], np.float32(m[key])) for m in metrics]
  # The profiler traced batch 1 only (batch 0 compiles).
  (trace,) = (tmp_path / TENSORBOARD_DIR / "plugins" / "profile").glob("*/perfetto_trace.json.gz")
  trace_events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
  assert sorted(e["args"]["step_num"] for e in trace_events if e.get("name") == "sample") == ["1"]


def test_image_depends_only_on_its_key_not_on_the_batch(model):
  sampler = engine.get_sampler(model, SETTINGS)
  requests = _requests(2)
  together = engine.generate_batch(sampler, requests, [0] * 4, seed=0)
  alone = engine.generate_batch(sampler, [requests[2]] * 4, [0] * 4, seed=0)[0]
  np.testing.assert_array_equal(alone, together[2])
  other_attempt = engine.generate_batch(sampler, requests, [1] * 4, seed=0)
  assert np.abs(other_attempt.astype(int) - together).max() > 10
  # Noise rows are a pure function of (seed, class, index, attempt), drawn from the documented key.
  import jax

  want = jax.random.normal(engine.item_key(0, 7, 3, 1), (4, 16, 16))
  np.testing.assert_array_equal(engine.initial_noise(0, [5, 7], [0, 3], [0, 1], (4, 16, 16))[1], want)


def test_flagged_images_are_replaced_and_counted(model, tmp_path, monkeypatch):
  requests = _requests(2)
  sampler = engine.get_sampler(model, SETTINGS)
  first = engine.generate_batch(sampler, requests, [0] * 4, seed=0)
  # The replacement round: requests 1 and 3 at attempt 1, in a batch of their own 2.
  replacements = engine.generate_batch(sampler, [requests[1], requests[3]], [1, 1], seed=0)
  # A checker that flags the attempt-0 images of requests 1 and 3 (and nothing else).
  banned = {first[1].tobytes(), first[3].tobytes()}
  calls, generated = [], []

  def forced(images):
    calls.append(len(images))
    return np.array([im.tobytes() in banned for im in images])

  real_generate_batch = engine.generate_batch

  def counting(sampler, batch, attempts, **kwargs):
    generated.append(len(batch))
    return real_generate_batch(sampler, batch, attempts, **kwargs)

  monkeypatch.setattr(engine, "generate_batch", counting)
  engine.sample_requests(
    model, requests, tmp_path, method="clip_prompts", settings=SETTINGS, seed=0, batch_size=4, safety_fn=forced
  )
  rows, _ = _read_set(tmp_path)
  by_key = {r["key"]: r for r in rows}
  for i, request in enumerate(requests):
    row = by_key[request.key]
    replaced = i in (1, 3)
    assert row["safety_rejections"] == int(replaced) and row["attempt"] == int(replaced)
    expected = replacements[[1, 3].index(i)] if replaced else first[i]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / row["path"])), expected)
  assert calls == [4, 2]  # the batch, then the two replacements
  assert generated == [4, 2]  # the replacement round generated 2 images, not a padded batch of 4
  assert JsonlManifest(tmp_path / engine.METRICS_FILE).read()[0]["flagged"] == 2


def test_replacement_rounds_are_padded_to_a_power_of_two_multiple_of_the_devices():
  # (flagged, batch size, devices) -> the round's batch, by hand: the smallest devices * 2^k >= flagged, capped.
  cases = {(1, 64, 1): 1, (2, 64, 1): 2, (3, 64, 1): 4, (26, 64, 1): 32, (33, 64, 1): 64, (64, 64, 1): 64}
  cases |= {(1, 64, 8): 8, (9, 64, 8): 16, (20, 48, 8): 32, (33, 48, 8): 48, (5, 6, 2): 6}
  for (flagged, batch_size, devices), size in cases.items():
    assert engine.replacement_batch_size(flagged, batch_size, devices) == size, (flagged, batch_size, devices)


def test_checker_flagging_everything_stops_with_an_error(model, tmp_path):
  with pytest.raises(RuntimeError, match="flagged all 2 attempts"):
    engine.sample_requests(
      model,
      _requests(2),
      tmp_path,
      method="clip_prompts",
      settings=SETTINGS,
      seed=0,
      batch_size=4,
      safety_fn=lambda x: np.ones(len(x), bool),
      max_attempts=2,
    )


_RUN = """
import sys
from jax_aug.diffusion import engine, methods
from jax_aug.diffusion.loading import load_sd
model = load_sd({path!r})
requests = methods.build_requests("prompt", prompt_strategy="clip_templates", wnids={wnids!r}, images_per_class=4, seed=0)
engine.sample_requests(model, requests, {out!r}, method="clip_prompts",
                       settings=engine.SamplerSettings(num_inference_steps=3), seed=0, batch_size=4,
                       safety_fn=lambda x: __import__("numpy").zeros(len(x), bool))
emit("done")
"""


@pytest.mark.slow
def test_one_and_four_devices_give_the_same_images(tiny_path, tmp_path, run_jax):
  for devices in (1, 4):
    assert (
      run_jax(_RUN.format(path=str(tiny_path), wnids=WNIDS, out=str(tmp_path / f"d{devices}")), devices=devices) == "done"
    )
  rows1, files1 = _read_set(tmp_path / "d1")
  rows4, files4 = _read_set(tmp_path / "d4")
  assert rows1 == rows4 and len(rows1) == 8
  for key in files1:
    a = np.asarray(Image.open(tmp_path / "d1" / "images" / key[:9] / f"{key}.png"), dtype=int)
    b = np.asarray(Image.open(tmp_path / "d4" / "images" / key[:9] / f"{key}.png"), dtype=int)
    # Sharding changes XLA's per-device batch; the tiny float differences may move a pixel by one level.
    assert np.abs(a - b).max() <= 1, key


@pytest.mark.slow
def test_killed_run_resumes_to_identical_output(model, tiny_path, tmp_path):
  from tests.conftest import _jax_env, _program

  killed = tmp_path / "killed"
  code = _program(_RUN.format(path=str(tiny_path), wnids=WNIDS, out=str(killed)))
  proc = subprocess.Popen(
    [sys.executable, "-c", code], env=_jax_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  manifest = killed / "manifest.jsonl"
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if manifest.exists() and len(manifest.read_text().splitlines()) >= 2:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  done_before = len(JsonlManifest(manifest).read())
  assert 2 <= done_before < 8
  # Restart in this process (another process, same model files), then an uninterrupted reference run.
  for out in (killed, tmp_path / "reference"):
    engine.sample_requests(
      model, _requests(4), out, method="clip_prompts", settings=SETTINGS, seed=0, batch_size=4, safety_fn=_no_flags
    )
  rows, files = _read_set(killed)
  ref_rows, ref_files = _read_set(tmp_path / "reference")
  assert len(rows) == 8 and len({r["key"] for r in rows}) == 8
  assert rows == ref_rows and files == ref_files
  leftovers = [p for p in killed.rglob("*") if p.is_file() and p.name.startswith(".")]
  pngs = sorted(p.name for p in killed.rglob("*.png"))
  assert pngs == sorted(f"{r['key']}.png" for r in rows), leftovers


def test_bad_input(model, tmp_path):
  with pytest.raises(ValueError, match="zero images requested"):
    engine.sample_requests(model, [], tmp_path, method="clip_prompts", settings=SETTINGS, seed=0, batch_size=2)
  with pytest.raises(ValueError, match="zero images requested: images_per_class is 0"):
    methods.build_requests("prompt", prompt_strategy="simple", wnids=WNIDS, images_per_class=0, seed=0)
  with pytest.raises(ValueError, match="unknown sampling kind 'finetuned'"):
    methods.build_requests("finetuned", wnids=WNIDS, images_per_class=1, seed=0)
  with pytest.raises(ValueError, match="unknown prompt strategy 'dreambooth'"):
    methods.build_requests("prompt", prompt_strategy="dreambooth", wnids=WNIDS, images_per_class=1, seed=0)
  long_prompt = "a photo of " + "very " * 80 + "big cat"
  with pytest.raises(conditioning.PromptTooLongError, match=r"more than the text encoder's 77"):
    engine.get_sampler(model, SETTINGS).encode_prompts([long_prompt])
  bad_shape = engine.Request(WNIDS[0], 0, encoder_hidden_states=np.zeros((77, 16), np.float32))
  with pytest.raises(ValueError, match=r"shape \[77, 16\], expected \[77, 32\]"):
    engine.get_sampler(model, SETTINGS).conditionings([bad_shape])
  twice = _requests(1)[:1] * 2
  with pytest.raises(ValueError, match="appears twice"):
    engine.check_requests(twice)
  with pytest.raises(ValueError, match="multiple of the 1 local devices|positive multiple"):
    engine.sample_requests(model, _requests(1), tmp_path, method="clip_prompts", settings=SETTINGS, seed=0, batch_size=0)
  assert not any(tmp_path.iterdir())  # nothing written by refused runs


def test_boomerang_requests_start_from_subset_images(model, tmp_path):
  from jax_aug.io import load_image_file

  rng = np.random.default_rng(0)
  subset = []
  for wnid in WNIDS:
    for j in range(2):
      path = tmp_path / "subset" / f"{wnid}_{j}.png"
      path.parent.mkdir(exist_ok=True)
      Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
      subset.append({"wnid": wnid, "path": str(path)})
  requests = methods.build_requests("boomerang", wnids=WNIDS, images_per_class=3, seed=0, subset_records=subset)
  # Image i of a class starts from subset image i mod 2 of that class, with the empty prompt.
  assert [Path(r.init_image).name for r in requests[:3]] == [f"{WNIDS[0]}_{j}.png" for j in (0, 1, 0)]
  assert {r.prompt for r in requests} == {methods.BOOMERANG_PROMPT}
  settings = engine.SamplerSettings(num_inference_steps=3, boomerang_strength=0.7)
  out = tmp_path / "set"
  engine.sample_requests(
    model,
    requests,
    out,
    method="boomerang",
    settings=settings,
    seed=0,
    batch_size=4,
    safety_fn=_no_flags,
    read_image=load_image_file,
  )
  rows, _ = _read_set(out)
  assert len(rows) == 6 and all(r["boomerang_strength"] == 0.7 and r["init_image"] for r in rows)
  images = {r["key"]: np.asarray(Image.open(out / r["path"]), dtype=int) for r in rows}
  # Same init image, other noise (index 0 vs 2) differ less than different init images (0 vs 1).
  k = [r.key for r in requests[:3]]
  assert np.abs(images[k[0]] - images[k[2]]).mean() < np.abs(images[k[0]] - images[k[1]]).mean()
  with pytest.raises(ValueError, match="class n01491361 has no subset image"):
    methods.build_requests("boomerang", wnids=WNIDS, images_per_class=1, seed=0, subset_records=subset[:2])


@pytest.mark.slow
def test_two_hosts_split_the_work_and_match_one_host(tiny_path, tmp_path, run_jax, run_multihost):
  code = _RUN.replace(
    "import sys\n",
    "import sys\nfrom jax_aug.sharding import initialize_distributed\n"
    "initialize_distributed(COORDINATOR, NUM_PROCESSES, PROCESS_ID)\n",
  )
  assert run_multihost(
    code.format(path=str(tiny_path), wnids=WNIDS, out=str(tmp_path / "hosts")), processes=2, devices_per_process=1
  ) == ["done", "done"]
  run_jax(_RUN.format(path=str(tiny_path), wnids=WNIDS, out=str(tmp_path / "one")), devices=1)
  from jax_aug.data.augmentation_set import load_augmentation_set

  shards = sorted(p.name for p in (tmp_path / "hosts").glob("manifest*.jsonl"))
  assert shards == ["manifest-00000.jsonl", "manifest-00001.jsonl"]  # each host its own batches
  per_host = [len(JsonlManifest(tmp_path / "hosts" / s).read()) for s in shards]
  assert per_host == [4, 4]
  hosts = {r["key"]: r for r in load_augmentation_set(tmp_path / "hosts")}
  one = {r["key"]: r for r in load_augmentation_set(tmp_path / "one")}
  assert hosts.keys() == one.keys()
  for key in one:
    assert Path(hosts[key]["path"]).read_bytes() == Path(one[key]["path"]).read_bytes(), key
