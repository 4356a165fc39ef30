"""The quality bars of the weights the package ships (jax_aug/assets/mini_world; docs/mini_world.md, "Quality
bars"), each measured against the world's generator, which knows the true concept of every image it draws:

- the files are those the manifest lists, unchanged (sha256), within the issue's 30 MB;
- the tiny CLIP's zero-shot top-1 on the target test split with "A photo of w(n)." prompts >= 70%;
- the safety checker, loaded as the study loads it (`load_sd` on the assembled SD folder, `make_safety_fn`),
  flags the NSFW concept's corpus images the heads were not fitted on (>= the safety bar's 80%) and few others;
- retrieval precision: of the 130 corpus images the world's index returns for each class's no-ws prompt,
  >= 80% show that class (slow: draws the whole 50,000-image corpus and builds the index as the study does);
  and the study's retrieval (configs/mini.py) fills its 50 images per class, >= 80% of them of the class.

The bars of generated images (recognition, personalization, the engine replacing flagged samples) need a
finished mini study: scripts/check_mini_world_study.py measures them (docs/mini_world.md).
"""

from pathlib import Path

import numpy as np
import pytest

from jax_aug.data.augmentation_set import load_augmentation_set
from jax_aug.diffusion.loading import load_sd
from jax_aug.diffusion.safety import make_safety_fn
from jax_aug.io import decode_image
from jax_aug.mini_world import assemble, concepts, corpus, quality, safety_bar, target, world
from jax_aug.mini_world.train import MANIFEST
from jax_aug.retrieval.clip_model import embed_images, embed_texts, load_clip
from jax_aug.retrieval.index import LocalIndex
from jax_aug.retrieval.pipeline import retrieve
from jax_aug.study.config_files import load_module

# configs/mini_world_train.py: the heads are fitted on every corpus item but the last 5,000.
HEADS_HOLDOUT = 5000
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_shipped_files_are_the_manifests_unchanged_and_within_30_mb():
  manifest = world.verify_weights(world.ASSETS)  # every listed file's sha256
  assert set(manifest) == {"clip", "vae", "unet", "aesthetic", "safety"}
  listed = {relative for entry in manifest.values() for relative in entry["files"]}
  present = {p.relative_to(world.ASSETS).as_posix() for p in world.ASSETS.rglob("*") if p.is_file()}
  assert present == listed | {MANIFEST}
  assert sum((world.ASSETS / f).stat().st_size for f in listed) <= 30 * 10**6


def test_shipped_clip_zero_shot_on_the_target_test_split_meets_the_bar():
  clip = load_clip(str(world.ASSETS / "clip"))
  prompts = embed_texts(clip, quality.class_prompts())
  # w(n): the class name with its white space removed (PROTOCOL.md, the no-ws simple prompt).
  assert quality.class_prompts()[1] == "A photo of tigershark,Galeocerdocuvieri."
  images, labels = [], []
  for label, wnid in enumerate(concepts.WNIDS):
    for index in range(concepts.TARGET_TEST_PER_CLASS):
      images.append(decode_image(target.target_item(wnid, "val", index), source=f"{wnid} val {index}"))
      labels.append(label)
  top1 = quality.zero_shot_top1(embed_images(clip, images, batch_size=256), np.asarray(labels), prompts)
  assert len(images) == 24 * 50
  assert top1 >= quality.ZERO_SHOT_BAR, top1


def test_shipped_safety_checker_flags_the_held_out_nsfw_corpus_images(tmp_path):
  sd = load_sd(assemble.assemble_sd(world.ASSETS, tmp_path / "sd"))
  plan = concepts.corpus_plan()
  held_out = np.arange(len(plan) - HEADS_HOLDOUT, len(plan))
  nsfw = [i for i in held_out if plan[i] == concepts.NSFW][:120]
  classes = [i for i in held_out if plan[i] in concepts.CONCEPT_BY_WNID][:240]
  assert len(nsfw) == 120 and len(classes) == 240

  def flagged(indices):
    images = np.stack(
      [np.asarray(decode_image(corpus.corpus_item(int(i), plan[i])[0], source=f"corpus {i}")) for i in indices]
    )
    return np.asarray(make_safety_fn(sd)(images), dtype=bool)

  recall, false_alarm = flagged(nsfw).mean(), flagged(classes).mean()
  assert recall >= safety_bar.RECALL_BAR, recall
  # Fitted for a 1% false-alarm rate on the other corpus images; 5% leaves room for 240 draws (SE 0.6 points).
  assert false_alarm <= 0.05, false_alarm


@pytest.mark.slow  # draws the 50,000-image corpus and embeds it (the world's index), about 2-3 minutes here
def test_shipped_clip_retrieves_each_class_from_the_worlds_index(tmp_path):
  paths = world.prepare_world(tmp_path / "world", world.ASSETS, workers=2)
  clip = load_clip(str(world.ASSETS / "clip"))
  precision = quality.retrieval_precision(
    LocalIndex(paths.index, columns=["concept"]), embed_texts(clip, quality.class_prompts()), concepts.WNIDS
  )
  assert set(precision) == set(concepts.WNIDS)
  assert np.mean(list(precision.values())) >= quality.RETRIEVAL_BAR, precision

  # The study's own retrieval (configs/mini.py: filters, safety checker, k raised gradually) fills each class's
  # 50 images, mostly of the class: with clip-retrieval's duplicate detector at 0.94 it filled none (the world's
  # CLIP links distinct images of a class; docs/mini_world.md), which the bar above did not see.
  config = load_module(CONFIGS / "mini.py").get_config()
  config.mini_world.folder = str(tmp_path / "world")
  method = config.method_configs.retrieval.copy_and_resolve_references()
  method.classes = ("n01491361", "n02012849", "n03126707")  # tiger shark and the two cranes (one no-ws prompt)
  retrieve(method, tmp_path / "retrieval")
  retrieved = load_augmentation_set(tmp_path / "retrieval" / "augmentation_set")
  plan = concepts.corpus_plan()
  for wnid in method.classes:
    urls = [r["url"] for r in retrieved if r["wnid"] == wnid]
    assert len(urls) == method.images_per_class == 50, (wnid, len(urls))
    shown = [plan[int(url.removeprefix("miniworld://corpus/"))] for url in urls]
    # The cranes share their prompt: either crane counts as the class (the paper's ambiguity, by design).
    wanted = {"n02012849", "n03126707"} if wnid in ("n02012849", "n03126707") else {wnid}
    assert np.mean([concept in wanted for concept in shown]) >= quality.RETRIEVAL_BAR, (wnid, shown)
