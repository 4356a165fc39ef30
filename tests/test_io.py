"""Atomic writes, the append-only manifest and bounded decoding of untrusted image bytes."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from jax_aug import io as jio


def _png_bytes(width, height, mode="RGB"):
  buf = io.BytesIO()
  Image.new(mode, (width, height), color=0).save(buf, format="PNG")
  return buf.getvalue()


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
  path = tmp_path / "sub" / "x.json"
  jio.atomic_write_json(path, {"a": 1})
  jio.atomic_write_json(path, {"b": 2})
  assert json.loads(path.read_text()) == {"b": 2}
  assert os.listdir(path.parent) == ["x.json"]


def test_atomic_write_failure_keeps_previous_content(tmp_path):
  path = tmp_path / "x.json"
  jio.atomic_write_json(path, {"a": 1})
  with pytest.raises(TypeError):
    jio.atomic_write_json(path, {"a": object()})  # not JSON-serializable: fails before any write
  assert json.loads(path.read_text()) == {"a": 1}
  assert os.listdir(tmp_path) == ["x.json"]


def test_manifest_ignores_partial_last_line_and_appends_after_it(tmp_path):
  manifest = jio.JsonlManifest(tmp_path / "m.jsonl")
  manifest.append({"key": "a"})
  with open(manifest.path, "a") as f:
    f.write('{"key": "b", "trunc')  # what a crash in the middle of a write leaves
  with pytest.warns(UserWarning, match="partial last line"):
    assert manifest.read() == [{"key": "a"}]
  manifest.append({"key": "c"})
  assert manifest.read() == [{"key": "a"}, {"key": "c"}]
  assert manifest.keys(lambda r: r["key"]) == {"a", "c"}


def test_manifest_refuses_corruption_in_the_middle(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"key": "a"}\nnot json\n{"key": "c"}\n')
  with pytest.raises(ValueError, match=r"m.jsonl:2"):
    jio.JsonlManifest(path).read()


def test_decode_image_accepts_valid_png_and_converts_to_rgb():
  image = jio.decode_image(_png_bytes(7, 5, mode="L"), source="x.png")
  assert image.mode == "RGB" and image.size == (7, 5)
  assert np.asarray(image).shape == (5, 7, 3)


@pytest.mark.parametrize(
  "data, limits, match",
  [
    (b"<html>not found</html>", {}, "not a decodable image"),
    (_png_bytes(8, 8)[:40], {}, "not a decodable image"),
    (_png_bytes(64, 64), {"max_bytes": 10}, "exceeds the limit of 10 bytes"),
    (_png_bytes(200, 200), {"max_pixels": 100 * 100}, "decompression bomb"),
  ],
)
def test_decode_image_rejects_bad_bytes_naming_the_source(data, limits, match):
  with pytest.raises(jio.ImageDecodeError, match=match) as info:
    jio.decode_image(data, source="http-item-17", **limits)
  assert "http-item-17" in str(info.value)


def test_load_image_file_names_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.png"):
    jio.load_image_file(tmp_path / "nope.png")
