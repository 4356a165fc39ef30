"""Retrieved images that no one would train on: size filters (hand-computed reasons, counted per reason in
metrics.jsonl), EXIF orientation applied to downloads, transparency over the configured background."""

from __future__ import annotations

import numpy as np
import retrieval_support as case
from PIL import Image

from jax_aug.io import JsonlManifest
from jax_aug.retrieval import download, filters
from jax_aug.retrieval.pipeline import run_retrieval


def test_size_filter_reasons():
  sizes = [(1, 1), (4000, 2), (128, 128), (127, 500), (300, 100), (301, 100)]
  assert filters.shorter_side_reasons(sizes, 128) == [
    "shorter side 1 px < 128",
    "shorter side 2 px < 128",
    None,
    "shorter side 127 px < 128",
    "shorter side 100 px < 128",
    "shorter side 100 px < 128",
  ]
  assert filters.aspect_ratio_reasons(sizes, 3.0) == [
    None,
    "aspect ratio 2000.00 > 3.0",
    None,
    "aspect ratio 3.94 > 3.0",
    None,
    "aspect ratio 3.01 > 3.0",
  ]
  assert filters.shorter_side_reasons(sizes, None) == filters.aspect_ratio_reasons(sizes, None) == [None] * 6


def test_placeholders_and_strips_are_dropped_and_counted_phone_photos_stand_upright(tmp_path):
  index, images = case.build_case(tmp_path / "case")
  # Two of class A's expected survivors become a 1x1 placeholder and a 400x2 strip; id 5 becomes a phone
  # photo stored 48 wide x 40 high with EXIF "rotate 90 CW", and id 8 an RGBA image, half transparent.
  Image.new("RGB", (1, 1), (0, 90, 190)).save(images / "000.png")
  Image.new("RGB", (400, 2), (6, 100, 194)).save(images / "003.png")
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.new("RGB", (48, 40), (10, 100, 190)).save(images / "005.png", exif=exif.tobytes())
  Image.fromarray(np.full((36, 40, 4), [16, 100, 184, 0], np.uint8), "RGBA").save(images / "008.png")
  config = case.case_config(index, images)
  config.filters.min_shorter_side = 16
  config.download.background = (0, 255, 0)
  run_retrieval(config, tmp_path / "run", case.case_components(config))
  records = {(r["wnid"], r["id"]): r for r in JsonlManifest(tmp_path / "run" / "candidates.jsonl").read()}
  assert records[(case.CLASS_A, 0)]["reason"] == "shorter side 1 px < 16"
  assert records[(case.CLASS_A, 3)]["reason"] == "shorter side 2 px < 16"
  fetches = [m for m in JsonlManifest(tmp_path / "run" / "metrics.jsonl").read() if m["event"] == "fetch"]
  assert sum(m.get("min_shorter_side", 0) for m in fetches) == 2
  upright = Image.open(tmp_path / "run" / "cache" / case.CLASS_A / "5.png")
  assert upright.size == (32, 38)  # 40 x 48 upright, shorter side resized to 32 (image_size)
  transparent = np.asarray(Image.open(tmp_path / "run" / "cache" / case.CLASS_A / "8.png"))
  assert (transparent == [0, 255, 0]).all()


def test_aspect_ratio_filter_is_counted(tmp_path):
  index, images = case.build_case(tmp_path / "case")
  Image.new("RGB", (400, 20), (6, 100, 194)).save(images / "003.png")
  config = case.case_config(index, images)
  run_retrieval(config, tmp_path / "run", case.case_components(config))
  records = {(r["wnid"], r["id"]): r for r in JsonlManifest(tmp_path / "run" / "candidates.jsonl").read()}
  assert records[(case.CLASS_A, 3)]["reason"] == "aspect ratio 20.00 > 3.0"
  fetches = [m for m in JsonlManifest(tmp_path / "run" / "metrics.jsonl").read() if m["event"] == "fetch"]
  assert sum(m.get("max_aspect_ratio", 0) for m in fetches) == 1


def test_url_downloads_get_exif_orientation_and_the_size_before_resizing():
  import io

  from jax_aug.study.config_files import base_config

  config = base_config(case.REPO_ROOT / "configs", "retrieval", "tiny").download
  buffer = io.BytesIO()
  exif = Image.Exif()
  exif[0x0112] = 8  # "rotate 90 CCW to display"
  Image.new("RGB", (120, 80)).save(buffer, format="JPEG", exif=exif.tobytes())
  fetched = download._decode(3, buffer.getvalue(), "candidate 3", config)
  assert fetched.status == "success" and fetched.size == (80, 120)  # upright: 80 wide, 120 high
  assert fetched.image.size == (64, 96)  # shorter side resized to image_size 64
