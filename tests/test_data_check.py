"""The data check over folders with bad files built in code: exactly the undecodable files quarantined with
the right reason, resumable, parallel, strict; the splits skip them without reshuffling their classes;
the study's `check` stage feeds the `data` stage."""

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from jax_aug import io as jio
from jax_aug.data import check, sources, subsets
from jax_aug.data.synthetic import DEFAULT_WNIDS, make_synthetic_imagenet
from jax_aug.study import runner
from jax_aug.study.config_files import load_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
W = list(DEFAULT_WNIDS)
TRAIN, VAL = 20, 3  # per class: subset 2, validation 2, 20% subset 4


def _encode(image, fmt, **params):
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **params)
  return buffer.getvalue()


def _bomb_header(width, height):
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
  return make_synthetic_imagenet(
    tmp_path_factory.mktemp("clean"), train_per_class=TRAIN, val_per_class=VAL, image_size=24, seed=0
  )


def _splits(root, quarantine=()):
  return subsets.make_splits(sources.folder_records(root / "train"), seed=0, quarantined=quarantine)


def _relative(records, root):
  return [str(Path(r["path"]).relative_to(root)) for r in records]


def _with_bad_files(clean, target):
  """A copy of `clean` with files broken in place ({relative path: expected reason}) and non-image files."""
  shutil.copytree(clean, target)
  splits = _splits(clean)
  by_class = lambda split, wnid: [r for r in splits[split] if r["wnid"] == wnid]
  victims = {
    by_class("subset", W[0])[0]["path"]: ("undecodable", lambda d: d[: len(d) // 2]),  # truncated JPEG
    by_class("validation", W[0])[1]["path"]: ("undecodable", lambda d: b""),  # zero bytes
    by_class("subset", W[1])[1]["path"]: ("undecodable", lambda d: b"<html>404</html>"),  # HTML as .JPEG
    by_class("subset_20", W[2])[-1]["path"]: ("too_many_pixels", lambda d: _bomb_header(20000, 20000)),
    sorted((clean / "val" / W[3]).iterdir())[0]: ("undecodable", lambda d: d[:100]),
  }
  expected = {}
  for path, (reason, damage) in victims.items():
    relative = Path(path).relative_to(clean)
    (target / relative).write_bytes(damage(Path(path).read_bytes()))
    expected[str(target / relative)] = reason
  for name in ("notes.txt", ".DS_Store", "clip.gif"):
    (target / "train" / W[4] / name).write_bytes(b"not an image the study reads")
  return expected


def test_tfds_records_are_checked_in_worker_processes(tmp_path):
  root = make_synthetic_imagenet(
    tmp_path / "synthetic", wnids=W[:2], train_per_class=40, val_per_class=1, image_size=16, seed=0, tfds=True
  )
  records = sources.tfds_records(root / "tfds", "train")  # the parent opens the data source first
  summary = check.check_records(records, tmp_path / "check", reader=sources.ImageReader(root / "tfds"), num_workers=2)
  assert summary["checked"] == 80 and summary["passed"] == 80


def test_image_suffixes_are_imagefolders():
  assert set(sources.IMAGE_SUFFIXES) == set(IMG_EXTENSIONS)


def test_check_quarantines_exactly_the_bad_files_resumes_and_runs_in_processes(clean, tmp_path):
  folder = tmp_path / "imagenet"
  expected = _with_bad_files(clean, folder)
  # Unusual but good images (each kind decodes): listed, checked and passed, whatever the suffix's case.
  extra = folder / "train" / W[5]
  rng = np.random.default_rng(0)
  rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
  (extra / "x_png_bytes.JPEG").write_bytes(_encode(rgb, "PNG"))
  (extra / "x_16bit.png").write_bytes(_encode(Image.fromarray(np.full((8, 8), 40000, np.uint16)), "PNG"))
  (extra / "x_rgba.WEBP").write_bytes(_encode(rgb.convert("RGBA"), "WEBP", lossless=True))
  (extra / "x_cmyk.TIF").write_bytes(_encode(rgb.convert("CMYK"), "TIFF"))
  (extra / "x_gray.bmp").write_bytes(_encode(rgb.convert("L"), "BMP"))
  (extra / "x_1x1.ppm").write_bytes(_encode(Image.new("RGB", (1, 1)), "PPM"))
  out = tmp_path / "check"
  summary = check.check_path(folder, out, num_workers=2)
  rows = [json.loads(line) for line in (out / check.QUARANTINE_FILE).read_text().splitlines()]
  assert {r["path"]: r["reason"] for r in rows} == expected
  assert all(r["size"] == Path(r["path"]).stat().st_size and r["error"] for r in rows)
  n_images = len(W) * (TRAIN + VAL) + 6
  assert summary["kind"] == "ilsvrc_folder" and summary["checked"] == n_images
  assert summary["quarantined"] == 5 and summary["passed"] == n_images - 5
  assert summary["quarantined_by_reason"] == {"too_many_pixels": 1, "undecodable": 4}
  assert summary["ignored_files"] == 3 and json.loads((out / check.SUMMARY_FILE).read_text()) == summary
  # Resume: a rerun decodes nothing; a run killed after its first chunk decodes only the rest.
  assert check.check_path(folder, out)["decoded_this_run"] == 0
  scanned = out / check.SCANNED_FILE
  scanned.write_text("".join(scanned.read_text().splitlines(keepends=True)[: check.CHUNK]))
  again = check.check_path(folder, out)
  assert again["decoded_this_run"] == n_images - check.CHUNK and again["quarantined"] == 5
  assert check.read_quarantine(out) == expected


def test_strict_check_fails_listing_every_bad_file_and_missing_files_are_unreadable(clean, tmp_path):
  folder = tmp_path / "imagenet"
  expected = _with_bad_files(clean, folder)
  with pytest.raises(check.DataCheckFailed, match="5 of 138 images failed") as info:
    check.check_path(folder, tmp_path / "check", strict=True)
  assert all(path in str(info.value) for path in expected)
  records = [{"wnid": W[0], "path": str(tmp_path / "gone.JPEG")}]
  big = tmp_path / "big.png"
  big.write_bytes(_encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)), "PNG"))
  records.append({"wnid": W[0], "path": str(big)})
  reader = sources.ImageReader(options=jio.DecodeOptions(max_bytes=4096))
  check.check_records(records, tmp_path / "small", reader=reader)
  assert check.read_quarantine(tmp_path / "small") == {str(tmp_path / "gone.JPEG"): "unreadable", str(big): "too_many_bytes"}


def test_splits_skip_quarantined_files_and_keep_everything_else(clean, tmp_path):
  """Study stages check + data over a folder with bad files: the splits equal those of the clean folder,
  class by class, except that each bad file's place goes to the next valid image in the class's order."""
  folder = tmp_path / "imagenet"
  bad = _with_bad_files(clean, folder)
  config = load_module(CONFIGS / "tiny.py").get_config()
  config.methods, config.stages = "baseline_10pct", "check,data"
  config.data.root, config.data.synthetic = str(folder), None
  runner.run_study(config, tmp_path / "study", log=lambda line: None)
  assert check.read_quarantine(tmp_path / "study" / "check") == bad
  ours = {
    name: subsets.read_manifest(tmp_path / "study" / "data" / "splits" / f"{name}.jsonl") for name in subsets.SPLIT_NAMES
  }
  reference = _splits(clean)
  reference["test"] = sources.folder_records(clean / "val")
  bad_relative = {str(Path(p).relative_to(folder)) for p in bad}
  for wnid in W:
    of = lambda splits, name, wnid=wnid: _relative(
      [r for r in splits[name] if r["wnid"] == wnid], folder if splits is ours else clean
    )
    # The clean folder's order with the bad files taken out is the start of ours: nothing reshuffled.
    clean_order = [p for p in of(reference, "subset") + of(reference, "validation") if p not in bad_relative]
    assert (of(ours, "subset") + of(ours, "validation"))[: len(clean_order)] == clean_order
    for name in subsets.SPLIT_NAMES:
      assert not set(of(ours, name)) & bad_relative
      if name != "test":
        assert len(of(ours, name)) == len(of(reference, name))  # per-class counts kept
    assert set(of(ours, "subset")) <= set(of(ours, "subset_20")) and not set(of(ours, "subset_20")) & set(
      of(ours, "validation")
    )
    assert of(ours, "test") == [p for p in of(reference, "test") if p not in bad_relative]
  untouched = [w for w in W if not any(f"/{w}/" in f"/{p}" for p in bad_relative)]
  assert len(untouched) == 2
  for wnid in untouched:
    for name in ("subset", "validation", "subset_20"):
      assert _relative([r for r in ours[name] if r["wnid"] == wnid], folder) == _relative(
        [r for r in reference[name] if r["wnid"] == wnid], clean
      )
  info = json.loads((tmp_path / "study" / "data" / "splits" / "info.json").read_text())
  assert info["quarantined_per_class"] == {W[0]: 2, W[1]: 1, W[2]: 1, W[3]: 1}
  # A training epoch over the checked splits meets no bad file; over the unchecked listing it still
  # completes, skipping (and counting) the 4 bad train files.
  from jax_aug.data import pipeline

  def skipped(records):
    batches = list(
      pipeline.make_train_loader(
        records, wnids=W, epoch=0, seed=0, global_batch_size=len(records), image_size=16, process_index=0, process_count=1
      )
    )
    return int(sum(b["skipped"].sum() for b in batches))

  assert skipped(ours["subset_20"] + ours["validation"]) == 0
  assert skipped(sources.folder_records(folder / "train")) == 4


@pytest.mark.parametrize(
  "row, match",
  [
    ({"wnid": W[0], "key": "n01443537_000009", "path": "../outside.png"}, r"resolves to .*outside the set folder"),
    ({"wnid": W[0], "key": "k", "path": "/etc/passwd"}, "must be relative to the set folder"),
    ({"wnid": "n99999999", "key": "k", "path": "images/a.png"}, "unknown WordNet id 'n99999999'"),
    ({"wnid": W[0], "key": "../../evil", "path": "images/a.png"}, "bad augmentation item key '../../evil'"),
    ({"wnid": W[0], "path": "images/a.png"}, r"the row lacks \['key'\]"),
    (["not", "a", "row"], "expected a JSON object"),
  ],
)
def test_augmentation_manifest_rows_are_validated_naming_file_and_line(tmp_path, row, match):
  from jax_aug.data import augmentation_set as aug

  writer = aug.AugmentationSetWriter(tmp_path / "set", "retrieval")
  for i in range(2):
    writer.add(np.full((8, 8, 3), i, np.uint8), {"wnid": W[0], "key": aug.item_key(W[0], i)})
  (tmp_path / "outside.png").write_bytes((tmp_path / "set" / "images" / W[0] / f"{W[0]}_000000.png").read_bytes())
  assert len(aug.load_augmentation_set(tmp_path / "set")) == 2
  assert check.check_path(tmp_path / "set", tmp_path / "check")["kind"] == "augmentation_set"
  with open(tmp_path / "set" / "manifest.jsonl", "a") as f:
    f.write(json.dumps(row) + "\n")
  with pytest.raises(ValueError, match=match) as info:
    aug.load_augmentation_set(tmp_path / "set")
  assert f"{tmp_path / 'set' / 'manifest.jsonl'}:3" in str(info.value)


def test_finetune_reader_skips_an_unreadable_image_with_weight_zero(clean, tmp_path, caplog):
  from jax_aug.data.imagenet_classes import class_by_wnid
  from jax_aug.data.transforms import vae_image
  from jax_aug.finetune import trainables
  from jax_aug.finetune.data import BatchReader, Example

  good = sorted((clean / "train" / W[0]).iterdir())[:2]
  paths = [str(good[0]), str(tmp_path / "gone.JPEG"), str(good[1])]
  examples = [Example(path=p, label=0, index=i, cluster=0) for i, p in enumerate(paths)]
  conditioning = trainables.build("tensor", [class_by_wnid(W[0])], clusters_per_class=1, tokenizer=None)
  reader = BatchReader(examples, read_image=sources.ImageReader(), resolution=16, conditioning=conditioning, seed=0)
  batch = reader.batch(np.array([0, 1, 2, -1]), epoch=1)
  assert batch["weight"].tolist() == [1, 0, 1, 0] and reader.skipped == 1 and "gone.JPEG" in caplog.text
  assert not batch["image"][1].any()
  np.testing.assert_array_equal(batch["image"][2], vae_image(Image.open(good[1]).convert("RGB"), 16))
