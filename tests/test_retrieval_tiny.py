"""The tiny config end to end through `jax_aug.retrieval.retrieve`: synthetic collection indexed with a
tiny random CLIP, queried with the real tokenizer, local files; the study's interface (set + exclusions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jax_aug.data.augmentation_set import load_augmentation_set
from jax_aug.data.subsets import load_exclusions
from jax_aug.retrieval import exclusion_list_path, retrieve
from jax_aug.study.config_files import method_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.slow  # CLIP compilation on CPU
def test_tiny_config_retrieves_every_class(tmp_path):
  config = method_config(CONFIGS, "retrieval", "tiny")
  out = retrieve(config, tmp_path)
  assert out == tmp_path / "augmentation_set"
  rows = load_augmentation_set(out)
  per_class = {}
  for row in rows:
    per_class[row["wnid"]] = per_class.get(row["wnid"], 0) + 1
    assert row["method"] == "retrieval" and row["url"].startswith("synthetic://")
    assert row["aesthetic"] >= 5.0 and -1.0 <= row["similarity"] <= 1.0 and row["caption"].startswith("A photo of ")
  excluded = load_exclusions(exclusion_list_path(tmp_path))
  assert excluded == {}
  assert per_class == {wnid: config.images_per_class for wnid in config.classes}
  # Similarities are in rank order within a class (keys number the ranks).
  for wnid in config.classes:
    sims = [r["similarity"] for r in sorted((r for r in rows if r["wnid"] == wnid), key=lambda r: r["key"])]
    assert sims == sorted(sims, reverse=True)
  # The paper config names the real models and filters.
  paper = method_config(CONFIGS, "retrieval", "paper")
  assert (paper.images_per_class, paper.k_factor, paper.max_multiple) == (130, 1.4, 6)
  assert paper.filters.min_aesthetic == 5.0 and paper.index.dedup_threshold == 0.94 and paper.index.deduplicate
  assert paper.clip.model == "openai/clip-vit-large-patch14" and paper.filters.safety_checker
