"""The mini world's recognition bars (issue 14), measured on a finished mini study (configs/mini.py):

a classifier trained on the target's training data (the study's classifier recipe on every train image outside
the validation split and the data check's quarantine, early-stopped on the validation split; its own top-1 on
the test split is reported beside, so a weak recognizer is visible) scores each method's final augmentation set
(`score_manifests`): the fraction of a method's images recognised as the class they were made for. Bars: the
samples of "A photo of w(n)." (simple prompt, no ws) >= 50%; textual inversion and FT conditioning above the
no-ws prompt, the conditioning they start from, and their validation loss lowered from the initial
conditioning's (`personalization_losses`, from the run their learning-rate search chose).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jax_aug import method_kinds
from jax_aug.data import check, subsets
from jax_aug.data.augmentation_set import load_augmentation_set
from jax_aug.io import atomic_write_bytes, atomic_write_json, read_json
from jax_aug.mini_world import concepts, corpus
from jax_aug.study import kinds, selection, wiring
from jax_aug.study import methods as methods_lib

RECOGNITION_BAR = 0.50
SAMPLED_METHODS = ("simple_prompt_no_ws", "textual_inversion", "ft_conditioning")
RESULTS_FILE = "recognition.json"
WEB_CONTROL = "web_photos"
WEB_PHOTOS_PER_CLASS = 50
# MoCo v2's colour augmentation (ColorJitter(0.4, 0.4, 0.4, 0.1) applied with p 0.8, grayscale with p 0.2): the
# target differs from the web in lighting and camera, not in what the objects are (docs/mini_world.md).
RECOGNIZER_PHOTOMETRIC = {"color_jitter": (0.4, 0.4, 0.4, 0.1), "color_jitter_p": 0.8, "grayscale_p": 0.2}


def recognition(
  config,
  workdir: str | Path,
  out: str | Path,
  methods: Sequence[str] = SAMPLED_METHODS,
  photometric: dict | None = None,
) -> dict:
  """Trains the recognizer in `out/classifier` (resuming) and writes `out/recognition.json`: per method (and for
  the web control, WEB_CONTROL) the recognised fraction of its images (overall and per class), the
  recognizer's own test top-1 and the numbers of images it was trained, validated and tested on. `photometric`:
  the recognizer's colour augmentation (config.classifier.input fields; default RECOGNIZER_PHOTOMETRIC)."""
  photometric = dict(RECOGNIZER_PHOTOMETRIC if photometric is None else photometric)
  from jax_aug.classifier.train import train_and_evaluate

  # Absolute: the split manifests written under out/manifests resolve relative paths against their own folder.
  workdir, out = Path(workdir).resolve(), Path(out).resolve()
  data = wiring.study_data(workdir / "data", None)  # every class: recognition is about the images
  validation = data.split("validation")
  held_out = {r["path"] for r in validation} | set(check.read_quarantine(workdir / "check"))
  listed, _ = subsets.source_records(config.data, workdir / "data")
  manifests = {
    "train": [r for r in listed["train"] if r["path"] not in held_out],
    "validation": validation,
    "test": data.split("test"),
  }
  selected = {name: methods_lib.select(config, name)[0] for name in methods}
  for name, method in selected.items():
    records = load_augmentation_set(kinds.augmentation_dir(config, workdir, method))
    manifests[name] = [{"wnid": r["wnid"], "path": r["path"]} for r in records]
  manifests[WEB_CONTROL] = web_photos(out / WEB_CONTROL, data.wnids)
  scored = (*methods, WEB_CONTROL)
  paths = {name: out / "manifests" / f"{name}.jsonl" for name in manifests}
  for name, records in manifests.items():
    subsets.write_manifest(paths[name], records)

  classifier = config.classifier.copy_and_resolve_references()
  classifier.train_manifests = (str(paths["train"]),)
  classifier.validation_manifest = str(paths["validation"])
  classifier.test_manifest = str(paths["test"])
  classifier.wnids = tuple(data.wnids)
  classifier.input.update(photometric)
  with classifier.unlocked():  # an optional field of train_and_evaluate, not of the study's classifier block
    classifier.score_manifests = tuple(str(paths[name]) for name in scored)
  results = train_and_evaluate(classifier, out / "classifier")
  summary = {
    "recognizer_test_top1": results["top1"] / 100,
    "recognizer_images": {name: len(manifests[name]) for name in ("train", "validation", "test")},
    "recognition_bar": RECOGNITION_BAR,
    "recognizer_photometric": dict(photometric),
    "recognised": {name: results["scored"][str(paths[name])]["top1"] / 100 for name in scored},
    "recognised_per_class": {name: results["scored"][str(paths[name])]["per_class_top1"] for name in scored},
    "images": {name: results["scored"][str(paths[name])]["num_images"] for name in scored},
  }
  finetuned = [name for name, method in selected.items() if method.kind == method_kinds.FINETUNED]
  summary["validation_loss"] = {name: personalization_losses(workdir, name) for name in finetuned}
  atomic_write_json(out / RESULTS_FILE, summary)
  return summary


def personalization_losses(workdir: str | Path, method: str) -> dict:
  """The fine-tuned method's validation loss before any step and its best over the epochs, in the run its
  learning-rate search chose (lr_search/<method>/lr_search.json)."""
  search = read_json(Path(workdir) / "lr_search" / method / selection.LR_SEARCH_FILE)
  run = search["runs"][search["chosen"]]
  initial, best = run["initial_val_loss"], run["best_validation_loss"]
  return {"run": search["chosen"], "initial": initial, "best": best, "lowered": initial is not None and best < initial}


def web_photos(out: str | Path, wnids: Sequence[str], per_class: int = WEB_PHOTOS_PER_CLASS) -> list[dict]:
  """The web control: for each class, its first `per_class` corpus items drawn in the photo style (in the order
  of the world's corpus plan), written under `out/<wnid>/` as the corpus's JPEGs; their manifest records."""
  out, plan = Path(out).resolve(), concepts.corpus_plan()
  records = []
  for wnid in wnids:
    found = []
    for index in np.flatnonzero(plan == wnid):
      path = out / wnid / f"{index}.jpg"
      if not path.exists():
        data, row = corpus.corpus_item(int(index), wnid)
        if row["style"] != "photo":
          continue
        atomic_write_bytes(path, data)
      found.append({"wnid": wnid, "path": str(path)})
      if len(found) == per_class:
        break
    records += found
  return records
