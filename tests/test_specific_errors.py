"""Issue 11, point 9: unclear errors became specific ones naming the bad thing and what was expected."""

import json
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from jax_aug.data.synthetic import DEFAULT_WNIDS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_boomerang_without_an_image_reader():
  from jax_aug.diffusion import engine

  request = engine.Request(wnid=DEFAULT_WNIDS[0], image_index=0, prompt="", init_image="/data/subset/a.JPEG")
  with pytest.raises(ValueError, match=r"Boomerang .* needs read_image= .*none was given"):
    engine.sample_requests(
      None,
      [request],
      "/nonexistent",
      method="boomerang",
      seed=0,
      batch_size=1,
      settings=engine.SamplerSettings(boomerang_strength=0.5),
    )


def test_stale_clusters_file(tmp_path):
  from jax_aug.finetune import clusters

  path = tmp_path / clusters.CLUSTERS_FILE
  wnids = [DEFAULT_WNIDS[0]]
  assignments = {"/d/a.JPEG": 0, "/d/b.JPEG": 1}
  path.write_text(json.dumps({"k": 2, "features": "inception_v3", "wnids": wnids, "sizes": {}, "assignments": assignments}))
  train = [{"wnid": wnids[0], "path": "/d/a.JPEG"}, {"wnid": wnids[0], "path": "/d/c.JPEG"}]
  inception = ml_collections.ConfigDict({"features": "inception_v3", "clip_model": ""})
  with pytest.raises(ValueError, match=r"clusters.json is stale: it assigns no cluster to 1 .*/d/c.JPEG.*delete it"):
    clusters.class_clusters(inception, train, [], wnids, 2, path, read_image=None)
  assert clusters.class_clusters(inception, train[:1], [], wnids, 2, path, read_image=None)["/d/a.JPEG"] == 0
  # clusters made on other features are not reused
  clip = ml_collections.ConfigDict({"features": "clip", "clip_model": "some/clip"})
  with pytest.raises(ValueError, match=r"k=2 on inception_v3 features over 1 classes; expected k=2 on clip features"):
    clusters.class_clusters(clip, train[:1], [], wnids, 2, path, read_image=None)
  with pytest.raises(ValueError, match=r"finetune.clusters.features='dino': expected one of \('inception_v3', 'clip'\)"):
    clusters.check_features(ml_collections.ConfigDict({"features": "dino", "clip_model": ""}))
  with pytest.raises(ValueError, match=r"features='clip' needs finetune.clusters.clip_model"):
    clusters.check_features(ml_collections.ConfigDict({"features": "clip", "clip_model": ""}))


def test_nprobe_on_a_flat_index(tmp_path):
  from jax_aug.retrieval.builder import write_index
  from jax_aug.retrieval.index import LocalIndex

  vectors = np.eye(4, dtype=np.float32)
  folder = write_index(tmp_path / "index", vectors, {"caption": list("abcd")})
  with pytest.raises(
    ValueError,
    match=r"index.nprobe=8 applies to IVF indexes only, but .*image.index is a"
    r" IndexFlat.*set index.nprobe=None",
  ):
    LocalIndex(folder, nprobe=8)
  assert LocalIndex(folder).search(vectors[2], 1, deduplicate=False)[0].id == 2


def test_empty_validation_split(tmp_path):
  from jax_aug.data import subsets
  from jax_aug.finetune import trainer
  from jax_aug.study.config_files import base_config

  splits = tmp_path / "splits"
  image = tmp_path / "a.png"
  image.write_bytes(b"")
  subsets.write_manifest(splits / "subset.jsonl", [{"wnid": DEFAULT_WNIDS[0], "path": str(image)}])
  subsets.write_manifest(splits / "validation.jsonl", [])
  (splits / "info.json").write_text(json.dumps({"wnids": [DEFAULT_WNIDS[0]]}))
  with pytest.raises(ValueError, match=r"validation.jsonl lists no images: fine-tuning stops on the validation loss"):
    trainer.split_records(base_config(CONFIGS, "data", "tiny"), str(splits), tmp_path)


def test_unknown_trainable_group():
  from jax_aug.finetune import trainer
  from jax_aug.study.config_files import base_config

  config = base_config(CONFIGS, "finetune", "tiny")
  with pytest.raises(
    ValueError,
    match=r"trainable group\(s\) \['text_encoder'\] have no learning rate: expected"
    r" groups among \['conditioning', 'pseudo_words', 'unet'\]",
  ):
    trainer.make_optimizer(config, {"conditioning": np.zeros(3), "text_encoder": np.zeros(2)})
  trainer.make_optimizer(config, {"conditioning": np.zeros(3)})  # a known group builds
