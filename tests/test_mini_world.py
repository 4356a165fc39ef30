"""The mini world's generator (docs/mini_world.md): determinism, per-item regeneration, caption-style
proportions, the lemma-sharing crane pair, counts; and the quality measures on hand-made embeddings."""

import collections
import hashlib
import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jax_aug.data.imagenet_classes import class_by_wnid
from jax_aug.data.sources import folder_listing
from jax_aug.data.subsets import make_splits
from jax_aug.mini_world import captions, concepts, quality
from jax_aug.mini_world import corpus as corpus_lib
from jax_aug.mini_world.corpus import corpus_item, read_metadata, write_corpus
from jax_aug.mini_world.drawing import Scene
from jax_aug.mini_world.target import target_item, write_target

# The design's numbers, copied from docs/mini_world.md (not from the code), so a change of either shows.
DOC_CAPTION_STYLES = {
  "lemma": 0.30,
  "full_name": 0.10,
  "no_ws": 0.15,
  "hypernym": 0.15,
  "descriptive": 0.10,
  "noisy": 0.12,
  "wrong": 0.08,
}


def _tree_bytes(root):
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus")
  return write_corpus(root / "a", seed=7, size=60)


def test_corpus_is_deterministic_and_items_regenerate_alone(small_corpus, tmp_path):
  again = write_corpus(tmp_path / "b", seed=7, size=60)
  assert _tree_bytes(small_corpus) == _tree_bytes(again)
  plan = concepts.corpus_plan(7, 60)
  rows = read_metadata(small_corpus).to_pylist()
  for i in (0, 17, 59):  # any one item, drawn alone, equals the written one
    data, row = corpus_item(i, str(plan[i]), seed=7)
    assert (small_corpus / "images" / rows[i]["image_path"]).read_bytes() == data
    assert row == rows[i]
  other_seed, _ = corpus_item(17, str(plan[17]), seed=8)
  assert other_seed != corpus_item(17, str(plan[17]), seed=7)[0]


def test_corpus_drawn_by_several_processes_is_the_same_bytes(tmp_path):
  # Two shards (1,000 + 5 items): drawn by 2 processes and by this one, the files are identical.
  size = corpus_lib.SHARD_SIZE + 5
  parallel = write_corpus(tmp_path / "parallel", seed=7, size=size, workers=2)
  serial = write_corpus(tmp_path / "serial", seed=7, size=size)
  assert len(list((parallel / "metadata").glob("*.parquet"))) == 2
  assert _tree_bytes(parallel) == _tree_bytes(serial)
  last = size - 1  # an item of the second shard, drawn alone
  data, row = corpus_item(last, str(concepts.corpus_plan(7, size)[last]), seed=7)
  assert (parallel / "images" / row["image_path"]).read_bytes() == data


def test_corpus_resumes_a_missing_shard_identically(small_corpus, tmp_path):
  import shutil

  copy = tmp_path / "c"
  shutil.copytree(small_corpus, copy)
  (copy / "mini_world.json").unlink()
  (copy / "metadata" / "00000.parquet").unlink()
  shutil.rmtree(copy / "images" / "000")
  write_corpus(copy, seed=7, size=60)
  assert _tree_bytes(copy) == _tree_bytes(small_corpus)
  with pytest.raises(ValueError, match="not the requested"):
    write_corpus(copy, seed=8, size=60)


def test_corpus_metadata_has_laion_columns(small_corpus):
  table = read_metadata(small_corpus).to_pydict()
  for column in ("url", "caption", "width", "height", "aesthetic", "NSFW", "concept", "caption_style", "image_path"):
    assert len(table[column]) == 60
  assert set(table["NSFW"]) <= {"UNLIKELY", "UNSURE", "NSFW"}
  assert all(1.0 <= a <= 9.0 for a in table["aesthetic"])
  assert table["width"] == [32] * 60 and table["height"] == [32] * 60


def test_caption_styles_in_stated_proportions():
  rng = np.random.default_rng(0)
  n = 6000
  counts = collections.Counter()
  for i in range(n):
    wnid = concepts.WNIDS[i % len(concepts.WNIDS)]
    scene = Scene(
      concept=wnid,
      style="photo",
      background="plain",
      scale=0.5,
      colour=(200, 30, 30),
      unusual_colour=False,
      instances=1,
      jpeg_quality=90,
    )
    text, style = captions.class_caption(wnid, scene, "plain", rng)
    counts[style] += 1
    info = class_by_wnid(wnid)
    if style == "no_ws":  # w(n): the class name with every white space removed
      assert "".join(", ".join(info.lemmas).split()) in text
    elif style == "lemma":
      assert any(lemma in text for lemma in info.lemmas)
    elif style == "hypernym":
      assert info.hypernyms[0] in text or info.hypernyms[1] in text
      assert not any(lemma in text for lemma in info.lemmas)
  assert set(counts) == set(DOC_CAPTION_STYLES)
  for style, p in DOC_CAPTION_STYLES.items():
    assert abs(counts[style] / n - p) < 4 * math.sqrt(p * (1 - p) / n), (style, counts[style] / n, p)


def test_crane_pair_shares_a_lemma():
  bird, machine = class_by_wnid("n02012849"), class_by_wnid("n03126707")
  assert {bird.wnid, machine.wnid} <= set(concepts.WNIDS)
  assert set(bird.lemmas) & set(machine.lemmas) == {"crane"}
  prompts = quality.class_prompts([bird.wnid, machine.wnid])
  assert prompts == ["A photo of crane.", "A photo of crane."]


def test_composition_and_counts():
  assert len(concepts.WNIDS) >= 20 and len(set(concepts.WNIDS)) == len(concepts.WNIDS)
  plan = concepts.corpus_plan()
  counts = collections.Counter(plan.tolist())
  assert len(plan) == 50_000
  assert all(counts[w] == 1650 for w in concepts.WNIDS)
  assert counts[concepts.NSFW] == 1400 and counts[concepts.DISTRACTOR] == 9000
  imagenet_like = concepts.imagenet_like_counts()
  assert min(imagenet_like.values()) == 732 and max(imagenet_like.values()) == 1300
  assert sum(v < 1300 for v in imagenet_like.values()) == 8
  train = concepts.target_train_counts()
  assert train == {w: round(n / 5) for w, n in imagenet_like.items()}
  assert min(train.values()) == 146 and max(train.values()) == 260


def test_target_dataset_layout_and_splits(tmp_path):
  wnids = ("n02012849", "n03126707")
  root = write_target(tmp_path / "t", seed=3, wnids=wnids)
  train, ignored = folder_listing(root / "train", list(wnids))
  test, _ = folder_listing(root / "val", list(wnids))
  assert not ignored
  expected = concepts.target_train_counts(3)
  per_class = collections.Counter(r["wnid"] for r in train)
  assert per_class == {w: expected[w] for w in wnids}
  assert collections.Counter(r["wnid"] for r in test) == {w: 50 for w in wnids}
  splits = make_splits(train, seed=0)
  subset = collections.Counter(r["wnid"] for r in splits["subset"])
  assert subset == {w: math.ceil(expected[w] / 10) for w in wnids}
  # one image regenerated alone equals the written one
  assert (root / "train" / wnids[1] / f"{wnids[1]}_5.JPEG").read_bytes() == target_item(wnids[1], "train", 5, seed=3)
  with pytest.raises(ValueError, match="not classes of the mini world"):
    write_target(tmp_path / "u", wnids=("n01440764",))


class _FakeIndex:
  """Exact inner-product search over given embeddings with a `concept` column (hand-made world)."""

  def __init__(self, embeddings, concepts_):
    self.embeddings, self.concepts = embeddings, concepts_

  def search(self, query, k, *, deduplicate):
    from jax_aug.retrieval.index import Neighbour

    order = np.argsort(-(self.embeddings @ query))[:k]
    return [Neighbour(int(i), float(self.embeddings[i] @ query), {"concept": self.concepts[i]}) for i in order]


def test_quality_measures_on_hand_made_embeddings(tmp_path):
  import pyarrow as pa

  from jax_aug.retrieval.index import LocalIndex

  eye = np.eye(4, dtype=np.float32)
  # 10 images per class on its axis; class 1's closest 10 include 5 class-3 images leaning towards axis 1.
  images = np.concatenate([np.repeat(eye[c][None], 10, 0) for c in range(4)])
  labels = np.repeat(np.arange(4), 10)
  wnids = ["a", "b", "c", "d"]
  leaning = images[labels == 3][:5] * 0.3 + eye[1] * 0.95
  images[np.flatnonzero(labels == 3)[:5]] = leaning / np.linalg.norm(leaning, axis=1, keepdims=True)
  truth = [wnids[label] for label in labels]
  # zero-shot: every image nearest its own axis except the 5 leaning ones -> 35/40
  assert quality.zero_shot_top1(images, labels, eye) == pytest.approx(35 / 40)
  per_class = quality.zero_shot_per_class(images, labels, eye, wnids)
  assert per_class["d"] == {"top1": 0.5, "taken_for": {"b": 5}}
  assert per_class["b"] == {"top1": 1.0, "taken_for": {}}
  # two classes with one prompt (the cranes): the images of both go to the first, as argmax breaks ties
  shared = (eye[1] + eye[2]) / np.sqrt(2)
  per_class = quality.zero_shot_per_class(images, labels, np.stack([eye[0], shared, shared, eye[3]]), wnids)
  assert per_class["b"] == {"top1": 1.0, "taken_for": {}}
  assert per_class["c"] == {"top1": 0.0, "taken_for": {"b": 10}}
  # precision at k=15 for class b: 10 b's + 5 leaning d's -> 10/15; classes a and c: 10 own + 5 others
  folder = quality.build_corpus_index(tmp_path / "index", images, pa.table({"concept": truth}))
  precision = quality.retrieval_precision(LocalIndex(folder, columns=["concept"]), eye, wnids, k=15)
  assert precision["b"] == pytest.approx(10 / 15)
  assert precision == quality.retrieval_precision(_FakeIndex(images, truth), eye, wnids, k=15)


def _write_world(root, pixels):
  """A world folder with one target PNG per entry of `pixels` and one corpus PNG, and a study's split manifest
  naming the target images by absolute path."""
  for i, array in enumerate(pixels):
    path = root / "world" / "target" / "train" / "n01443537" / f"n01443537_{i}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1 + i)
  corpus_image = root / "world" / "corpus" / "images" / "000" / "000000000.png"
  corpus_image.parent.mkdir(parents=True)
  Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(corpus_image)
  splits = root / "study" / "data" / "splits"
  splits.mkdir(parents=True)
  rows = [{"path": str(p), "wnid": "n01443537"} for p in sorted((root / "world" / "target").rglob("*.png"))]
  (splits / "subset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return root / "world", root / "study"


def test_world_fingerprint_follows_pixels_not_bytes_or_location(tmp_path):
  fingerprint = importlib.import_module("scripts.fingerprint_mini_world")
  rng = np.random.default_rng(0)
  pixels = [rng.integers(0, 256, (4, 5, 3), dtype=np.uint8) for _ in range(2)]
  world, study = _write_world(tmp_path / "a", pixels)
  # Reference by hand: each image's relative path, its shape, then its RGB bytes, in sorted path order.
  expected = hashlib.sha256()
  for i, array in enumerate(pixels):
    expected.update(f"target/train/n01443537/n01443537_{i}.png\0(4, 5, 3)\0".encode() + array.tobytes())
  assert fingerprint.pixels_digest(world, world / "target") == (2, expected.hexdigest())

  # Elsewhere, with other PNG compression (other bytes, same pixels): the same digests.
  moved, moved_study = _write_world(tmp_path / "b", pixels)
  for path in (moved / "target").rglob("*.png"):
    Image.open(path).save(path, compress_level=9)
  assert fingerprint.pixels_digest(moved, moved / "target") == fingerprint.pixels_digest(world, world / "target")
  manifest = Path("data") / "splits" / "subset.jsonl"
  assert fingerprint.split_digest(moved_study / manifest, moved) == fingerprint.split_digest(study / manifest, world)

  # One pixel changed: another digest. A manifest naming images outside the world is refused by name.
  pixels[1][0, 0, 0] ^= 1
  changed, _ = _write_world(tmp_path / "c", pixels)
  assert fingerprint.pixels_digest(changed, changed / "target") != fingerprint.pixels_digest(world, world / "target")
  with pytest.raises(ValueError, match="not under the world folder"):
    fingerprint.split_digest(study / manifest, moved)
