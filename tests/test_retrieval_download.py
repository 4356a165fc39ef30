"""Downloads through img2dataset from a local HTTP server on 127.0.0.1: good images, 404s, a timeout,
non-images, an oversized body and a pixel bomb; every failure is counted and none stops the run. Local
files: paths outside the image root are refused."""

from __future__ import annotations

import io
import sys
import types

import ml_collections
import numpy as np
import pytest
from PIL import Image
from retrieval_support import http_server

from jax_aug.retrieval.download import fetch_local, fetch_urls, resize_shorter_side


def _config(**overrides):
  c = ml_collections.ConfigDict(
    dict(
      processes=1,
      threads=8,
      timeout_s=2,
      retries=0,
      max_bytes=200_000,
      max_pixels=300 * 300,
      image_size=32,
      background=(255, 255, 255),
      distributor="multiprocessing",
    )
  )
  c.update(overrides)
  return c


def _encode(array: np.ndarray, fmt: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=fmt)
  return buffer.getvalue()


def test_resize_shorter_side_downscales_only():
  image = Image.new("RGB", (100, 50))
  assert resize_shorter_side(image, 32).size == (64, 32)
  assert resize_shorter_side(image, 64).size == (100, 50)


@pytest.mark.slow  # img2dataset spawns its worker and logger processes: ~20-40 s on 2 busy cores
def test_fetch_urls_counts_failures_and_keeps_going(tmp_path):
  rng = np.random.default_rng(0)
  good_png = rng.integers(0, 256, (48, 64, 3), np.uint8)
  good_jpeg = np.full((40, 40, 3), 120, np.uint8)
  routes = {
    "/a.png": (200, _encode(good_png, "PNG"), 0.0),
    "/b.jpg": (200, _encode(good_jpeg, "JPEG"), 0.0),
    "/slow.png": (200, _encode(good_png, "PNG"), 6.0),  # beyond timeout_s=2
    "/page.html": (200, b"<html>not an image</html>", 0.0),
    # 400 KB of noise PNG: over max_bytes=200_000.
    "/huge.png": (200, _encode(rng.integers(0, 256, (300, 450, 3), np.uint8), "PNG"), 0.0),
    # 2000 x 2000 single-colour PNG: a few KB of bytes, 4 Mpx > max_pixels (decompression-bomb guard).
    "/bomb.png": (200, _encode(np.zeros((2000, 2000, 3), np.uint8), "PNG"), 0.0),
  }
  assert len(routes["/huge.png"][1]) > 200_000 and len(routes["/bomb.png"][1]) < 200_000
  with http_server(routes) as (base, counts):
    items = [
      (10, f"{base}/a.png"),
      (11, f"{base}/missing.png"),
      (12, f"{base}/slow.png"),
      (13, f"{base}/page.html"),
      (14, f"{base}/huge.png"),
      (15, f"{base}/bomb.png"),
      (16, f"{base}/b.jpg"),
      (17, f"{base}/../../etc/passwd"),
    ]
    outcomes = fetch_urls(items, _config(), scratch=tmp_path / "scratch")
  by_id = {o.id: o for o in outcomes}
  assert [o.id for o in outcomes] == [i for i, _ in items]
  assert {i: o.status for i, o in by_id.items()} == {
    10: "success",
    11: "failed_to_download",
    12: "failed_to_download",
    13: "failed_to_decode",
    14: "failed_to_decode",
    15: "failed_to_decode",
    16: "success",
    17: "failed_to_download",
  }
  assert "404" in by_id[11].error
  assert "timed out" in by_id[12].error
  assert "not a decodable image" in by_id[13].error
  assert "exceeds the limit of 200000 bytes" in by_id[14].error
  assert "decompression bomb" in by_id[15].error
  # Decoded pixels are the served ones, resized so the shorter side is 32 (PIL bicubic, as a reference).
  expected = Image.fromarray(good_png).resize((43, 32), Image.Resampling.BICUBIC)
  np.testing.assert_array_equal(np.asarray(by_id[10].image), np.asarray(expected))
  assert by_id[16].image.size == (32, 32)
  assert counts["/a.png"] == 1  # one request per url (retries=0)
  # Nothing is left behind in the scratch folder, and no file was named after a url.
  assert list((tmp_path / "scratch").iterdir()) == []


def test_fetch_local_refuses_paths_outside_the_root(tmp_path):
  root = tmp_path / "images"
  root.mkdir()
  Image.new("RGB", (64, 40), (1, 2, 3)).save(root / "ok.png")
  (tmp_path / "secret.png").write_bytes(_encode(np.zeros((8, 8, 3), np.uint8), "PNG"))
  (root / "text.png").write_bytes(b"hello")
  outcomes = fetch_local(
    [(1, "ok.png"), (2, "../secret.png"), (3, str(tmp_path / "secret.png")), (4, "missing.png"), (5, "text.png")],
    _config(),
    root=root,
  )
  assert [o.status for o in outcomes] == [
    "success",
    "failed_to_download",
    "failed_to_download",
    "failed_to_download",
    "failed_to_decode",
  ]
  assert "outside the image root" in outcomes[1].error and "outside the image root" in outcomes[2].error
  assert outcomes[0].image.size == (51, 32) and outcomes[0].image.getpixel((0, 0)) == (1, 2, 3)


def test_pyspark_distributor_is_refused_clearly_without_pyspark_and_reaches_img2dataset(tmp_path, monkeypatch):
  import img2dataset

  from configs.base import retrieval as retrieval_config
  from jax_aug.retrieval.pipeline import retrieve

  monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark fails, as where it is not installed
  with pytest.raises(ImportError, match="download.distributor='pyspark' needs pyspark, which is not installed"):
    fetch_urls([(1, "http://127.0.0.1:9/a.png")], _config(distributor="pyspark"), scratch=tmp_path / "scratch")
  # The study's retrieval refuses before it builds an index or embeds a query: nothing is written.
  config = retrieval_config.get("tiny")
  config.download.source, config.download.distributor = "url", "pyspark"
  with pytest.raises(ImportError, match="pip install pyspark"):
    retrieve(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()
  with pytest.raises(ValueError, match="unknown download.distributor 'dask'"):
    fetch_urls([(1, "http://127.0.0.1:9/a.png")], _config(distributor="dask"), scratch=tmp_path / "scratch")
  # Where pyspark imports, img2dataset gets the distributor (its own pyspark_distributor then runs).
  monkeypatch.setitem(sys.modules, "pyspark", types.ModuleType("pyspark"))
  calls = []
  monkeypatch.setattr(img2dataset, "download", lambda **kwargs: calls.append(kwargs))
  outcomes = fetch_urls([(1, "http://127.0.0.1:9/a.png")], _config(distributor="pyspark"), scratch=tmp_path / "scratch")
  assert [c["distributor"] for c in calls] == ["pyspark"]
  assert [o.status for o in outcomes] == ["failed_to_download"]
