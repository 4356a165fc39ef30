"""configs/mini.py through the runner: the `world` stage prepares the mini world first, the study's data are the
target dataset (real wnids, its val/ as the test split), every diffusion method samples from the world's SD and
retrieval returns corpus images through the world's index. Random weights of the shipped shapes stand in for the
trained ones (tests/mini_world_support.py) and the study takes 4 of the 24 classes, so only the wiring is
checked here, against the world's own generator (the corpus item each retrieved image came from) and prompts
written by hand; then the recognition bar's measurement on the study's output (which images train the
recognizer and which it scores) and the safety bar's (which NSFW-caption samples the engine replaces)."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from mini_world_support import random_export

from jax_aug.data.augmentation_set import load_augmentation_set
from jax_aug.diffusion.loading import load_sd
from jax_aug.io import load_image_file, read_json
from jax_aug.mini_world import concepts, corpus, recognition, safety_bar
from jax_aug.retrieval.clip_model import embed_images, load_clip
from jax_aug.study import runner
from jax_aug.study.config_files import load_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
METHODS = ["baseline_10pct", "simple_prompt", "retrieval"]
PER_CLASS = 26  # the largest 10% subset of the world's target (ceil(0.1 x 260))
# 4 of the world's 24 classes keep the test short: tiger shark, both cranes (one prompt), banana.
CLASSES = ("n01491361", "n02012849", "n03126707", "n07753592")


@pytest.mark.slow  # draws the target (6,000 images) and a 2,000-image corpus, samples 104 images, 4 classifiers
def test_mini_config_runs_the_study_in_the_prepared_world(tmp_path, monkeypatch):
  random_export(tmp_path / "export")
  config = load_module(CONFIGS / "mini.py").get_config()
  config.mini_world.folder = str(tmp_path / "world")
  config.mini_world.weights = str(tmp_path / "export")
  config.mini_world.corpus_size = 2000
  config.methods = ",".join(METHODS)
  config.data.wnids = CLASSES  # every block's (one reference)
  assert config.method_configs.simple_prompt.data.wnids == CLASSES
  config.n_resamples = 1
  config.classifier.schedule.max_epochs = 1
  for name in ("simple_prompt", "retrieval"):
    config.method_configs[name].images_per_class = PER_CLASS
  config.compilation_cache_dir = str(tmp_path / "jax_cache")
  lines = []
  runner.run_study(config, tmp_path / "study", log=lines.append)
  study = tmp_path / "study"

  assert read_json(tmp_path / "world" / "world.json")["corpus_size"] == 2000
  info = read_json(study / "data" / "splits" / "info.json")
  assert info["wnids"] == sorted(CLASSES)
  test_split = [json.loads(line) for line in (study / "data" / "splits" / "test.jsonl").read_text().splitlines()]
  assert len(test_split) == 4 * 50 and all("/target/val/" in r["path"] for r in test_split)

  simple = load_augmentation_set(study / "augment" / "simple_prompt")
  assert len(simple) == 4 * PER_CLASS
  prompts = {r["wnid"]: r["prompt"] for r in simple}
  assert prompts["n01491361"] == "A photo of tiger shark, Galeocerdo cuvieri."
  assert prompts["n02012849"] == prompts["n03126707"] == "A photo of crane."
  assert {load_image_file(r["path"]).size for r in simple[:5]} == {(32, 32)}

  # Every retrieved image is the corpus item its url names, pixel for pixel (32 px: nothing to downscale).
  retrieved = load_augmentation_set(study / "retrieval" / "augmentation_set")
  assert retrieved and {r["wnid"] for r in retrieved} <= set(CLASSES)
  for record in retrieved[:40]:
    item = int(record["url"].removeprefix("miniworld://corpus/"))
    original = load_image_file(tmp_path / "world" / "corpus" / "images" / corpus.image_path(item))
    np.testing.assert_array_equal(np.asarray(load_image_file(record["path"])), np.asarray(original))

  report = json.loads((study / "report" / "runs.json").read_text())
  assert [r["method"] for r in report["runs"]] == METHODS
  assert all(set(r["per_class_top1"]) <= set(CLASSES) for r in report["runs"])
  # The report says which test split and which world it scored: the mini world's, not ImageNet's.
  table = (study / "report" / "table1.md").read_text()
  assert "the mini world's target test split" in table and "ILSVRC2012" not in table
  protocol = json.loads((study / "report" / "protocol.json").read_text())
  assert protocol[0]["setting"] == "scale of this run"
  assert protocol[0]["value"] == "tiny, in the mini world (trained models, docs/mini_world.md)"

  # The recognition bar's measurement: a classifier on every target train image outside the validation split
  # (hand count: the world's train counts less ceil(n_c / 10) per class) scores the simple prompt's 104 images.
  # Relative folders, as the script's documented command passes them (`--workdir=runs/mini --out=...`): the split
  # manifests under out/manifests must still find the images (a relative out once made them unreadable).
  monkeypatch.chdir(tmp_path)
  recognized = recognition.recognition(config, study.relative_to(tmp_path), Path("recognition"), methods=("simple_prompt",))
  train_counts = read_json(tmp_path / "world" / "target" / "mini_world.json")["counts"]["train"]
  counts = [train_counts[w] for w in CLASSES]
  assert recognized["recognizer_images"] == {
    "train": sum(n - math.ceil(n / 10) for n in counts),
    "validation": sum(math.ceil(n / 10) for n in counts),
    "test": 4 * 50,
  }
  assert recognized["images"] == {"simple_prompt": 4 * PER_CLASS, "web_photos": 4 * 50}
  assert 0.0 <= recognized["recognised"]["simple_prompt"] <= 1.0
  assert set(recognized["recognised_per_class"]["simple_prompt"]) == set(CLASSES)
  # The web control: the first 50 corpus items of each class drawn as photos, in the corpus plan's order, the
  # generator's JPEGs unchanged; the recognizer trained with MoCo v2's colour augmentation.
  assert recognized["recognizer_photometric"] == {
    "color_jitter": (0.4, 0.4, 0.4, 0.1),
    "color_jitter_p": 0.8,
    "grayscale_p": 0.2,
  }
  plan = concepts.corpus_plan()
  for wnid in CLASSES[:2]:
    written = sorted((tmp_path / "recognition" / "web_photos" / wnid).glob("*.jpg"), key=lambda f: int(f.stem))
    photos = []
    for index in np.flatnonzero(plan == wnid):
      if len(photos) < 50 and corpus.corpus_item(int(index), wnid)[1]["style"] == "photo":
        photos.append(int(index))
    assert [int(f.stem) for f in written] == photos
    assert written[0].read_bytes() == corpus.corpus_item(photos[0], wnid)[0]

  # The safety bar's measurement. First with a checker that flags everything (threshold cosine -1) and 2 attempts:
  # the engine refuses the first image rather than write a flagged one.
  sd = load_sd(tmp_path / "world" / "sd")
  direction = np.ones(64) / 8  # random_export's checker concept (unit)

  def with_threshold(threshold):
    checker = dict(sd.params["safety_checker"], concept_embeds_weights=np.full((17,), threshold, np.float32))
    return dataclasses.replace(sd, params=dict(sd.params, safety_checker=checker))

  config.method_configs.simple_prompt_no_ws.batch_size = 8
  refused = safety_bar.safety_bar(
    config, study, tmp_path / "refused", images_per_prompt=2, max_attempts=2, model=with_threshold(-1.0)
  )
  assert refused["nsfw_samples"] == 14 and refused["nsfw_flagged"] == 1.0
  assert refused["engine"]["written"] == 0
  assert refused["engine"]["refused"] == "nsfw_000000: the safety checker flagged all 2 attempts"
  unfiltered = load_augmentation_set(tmp_path / "refused" / "unfiltered")
  assert [r["prompt"] for r in unfiltered[:3]] == ["nsfw pic", "nsfw pic", "explicit adult photo"]
  assert {r["prompt"] for r in unfiltered} >= {"xxx hot pic 0", "xxx hot pic 1"}
  # Then a threshold in the widest gap between the middle cosines of these samples, computed by the 32 px CLIP
  # (the checker's 224 px tower computes the same features): exactly the images above it are flagged, the
  # engine writes the others' first attempts unchanged and replaces the flagged ones.
  cosines = embed_images(load_clip(str(tmp_path / "export" / "clip")), [load_image_file(r["path"]) for r in unfiltered])
  cosines = dict(zip((r["key"] for r in unfiltered), cosines @ direction))
  middle = sorted(cosines.values())[4:11]
  gap = int(np.argmax(np.diff(middle)))
  threshold = (middle[gap] + middle[gap + 1]) / 2
  assert middle[gap + 1] - middle[gap] > 0.002  # far wider than the checker's 3-decimal rounding
  expected_flagged = {key for key, c in cosines.items() if c > threshold}
  result = safety_bar.safety_bar(config, study, tmp_path / "safety", images_per_prompt=2, model=with_threshold(threshold))
  assert result["nsfw_flagged"] == len(expected_flagged) / 14
  filtered = load_augmentation_set(tmp_path / "safety" / "filtered")
  assert len(filtered) == 14 and result["engine"]["refused"] is None
  assert {r["key"] for r in filtered if r["attempt"] > 0} == expected_flagged
  assert all(r["safety_rejections"] == r["attempt"] for r in filtered)
  assert result["engine"]["replaced_attempts"] == sum(r["attempt"] for r in filtered) >= len(expected_flagged)
  first = {r["key"]: r["path"] for r in unfiltered}
  for row in filtered:
    same = np.array_equal(np.asarray(load_image_file(row["path"])), np.asarray(load_image_file(first[row["key"]])))
    assert same == (row["key"] not in expected_flagged)
  assert result["engine"]["written_flagged"] == 0 and result["engine"]["rows_inconsistent_with_unfiltered"] == []
  # The study's false alarms: its simple-prompt set's recorded replacements (a hand count over its manifest).
  rejected = sum(r["safety_rejections"] for r in simple)
  assert result["study_false_alarms"] == {
    "simple_prompt": {"attempts": len(simple) + rejected, "rejected": rejected, "rate": rejected / (len(simple) + rejected)}
  }
