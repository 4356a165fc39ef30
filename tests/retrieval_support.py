"""Test helpers of the retrieval area: clip-retrieval's own venv and a `clip back` server on 127.0.0.1,
and a small HTTP image server run in a thread."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIP_BACK_VENV = REPO_ROOT / ".venv-clip-back"
CLIP_BACK_PYTHON = CLIP_BACK_VENV / "bin" / "python"
LAUNCHER = REPO_ROOT / "jax_aug" / "retrieval" / "clip_back_launcher.py"


def _clip_back_env() -> dict:
  """The environment of every process of the clip-back venv: none of this repository's Python paths (the tests'
  PYTHONPATH hides torch, which clip-retrieval needs) and no other venv."""
  return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def ensure_clip_back_venv() -> Path:
  """clip-retrieval 2.45.0 in its own venv (numpy<2), created on first use (~95 s, 6.5 GB) and reused."""
  probe = [str(CLIP_BACK_PYTHON), "-c", "import clip_retrieval.clip_back, all_clip, flask"]
  if CLIP_BACK_PYTHON.exists() and subprocess.run(probe, capture_output=True, env=_clip_back_env()).returncode == 0:
    return CLIP_BACK_PYTHON
  subprocess.run(["python3.11", "-m", "venv", str(CLIP_BACK_VENV)], check=True, env=_clip_back_env())
  # Without the setuptools cap clip-retrieval's dependencies miss pkg_resources.
  install = subprocess.run(
    [str(CLIP_BACK_VENV / "bin" / "pip"), "install", "-q", "clip-retrieval==2.45.0", "setuptools<81"],
    capture_output=True,
    text=True,
    env=_clip_back_env(),
  )
  if install.returncode != 0:
    pytest.fail(f"installing clip-retrieval into {CLIP_BACK_VENV} failed:\n{install.stderr[-4000:]}")
  subprocess.run(probe, check=True, env=_clip_back_env())
  return CLIP_BACK_PYTHON


@contextlib.contextmanager
def clip_back_server(indices: dict[str, str], workdir: Path, port: int, columns: str, timeout_s: float = 240):
  """Runs the launcher over `indices` ({name: index folder}) and yields the server's base URL."""
  python = ensure_clip_back_venv()
  indices_json = workdir / "indices.json"
  indices_json.write_text(json.dumps(indices))
  env = {**_clip_back_env(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
  log_path = workdir / "clip_back.log"
  with open(log_path, "w") as log:
    proc = subprocess.Popen(
      [str(python), str(LAUNCHER), f"--indices_paths={indices_json}", f"--port={port}", f"--columns={columns}"],
      stdout=log,
      stderr=subprocess.STDOUT,
      cwd=workdir,
      env=env,
    )
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + timeout_s
    while True:
      if proc.poll() is not None:
        pytest.fail(f"clip back exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
      try:
        if requests.get(f"{url}/indices-list", timeout=2).status_code == 200:
          break
      except requests.ConnectionError:
        pass
      if time.monotonic() > deadline:
        pytest.fail(f"clip back did not answer within {timeout_s} s:\n{log_path.read_text()[-4000:]}")
      time.sleep(0.5)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


class _Server(http.server.ThreadingHTTPServer):
  daemon_threads = True


@contextlib.contextmanager
def http_server(routes: dict[str, tuple[int, bytes, float]]):
  """Serves {path: (status, body, delay_s)} on 127.0.0.1 in a thread; yields (base_url, request counts)."""
  counts: dict[str, int] = {}
  lock = threading.Lock()

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
      with lock:
        counts[self.path] = counts.get(self.path, 0) + 1
      status, body, delay = routes.get(self.path, (404, b"not found", 0.0))
      time.sleep(delay)
      try:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
      except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (timeout test)

    def log_message(self, *args):
      pass

  server = _Server(("127.0.0.1", 0), Handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}", counts
  finally:
    server.shutdown()
    server.server_close()


# --- a constructed retrieval case for the pipeline tests -------------------------------------------------
# Class A (tench) fills its 5 images at the second k step; class B (goldfish) never does and is excluded.
CLASS_A, CLASS_B = "n01440764", "n01443537"
IMAGES_PER_CLASS = 5  # k schedule: 7, 14, 21, 28, 35, 42
DIM = 8
# Among A's 40 neighbours (ranks = ids 0..39): low aesthetic 1, 4; NSFW flag 2; red image 6 (the test's
# safety checker flags red); no file 7. A's first five survivors are therefore ids 0, 3, 5, 8, 9.
A_LOW_AESTHETIC, A_NSFW, A_RED, A_MISSING = {1, 4}, {2}, {6}, {7}
A_EXPECTED = [0, 3, 5, 8, 9]
# B's 50 neighbours (ids 40..89): only three pass the aesthetic filter.
B_GOOD = {41, 50, 77}


def _unit(v):
  return v / np.linalg.norm(v)


def case_queries() -> dict[str, np.ndarray]:
  eye = np.eye(DIM, dtype=np.float32)
  return {CLASS_A: eye[0], CLASS_B: eye[1]}


def build_case(root: Path) -> tuple[Path, Path]:
  """Writes the index (clip-retrieval layout) and the images; returns (index folder, image root)."""
  from PIL import Image

  from jax_aug.retrieval.builder import write_index

  eye = np.eye(DIM)
  vectors, meta = [], {"image_path": [], "caption": [], "url": [], "aesthetic": [], "NSFW": []}
  images = root / "images"
  images.mkdir(parents=True)
  for i in range(90):  # A: ids 0..39; B: ids 40..89, more than the largest k, so B's list is all B's
    in_a = i < 40
    angle = 0.01 * ((i if in_a else i - 40) + 1)  # rank order = id order within each class
    main, side, other = (0, 2, 1) if in_a else (1, 4, 0)
    # A slight negative component on the other class's query keeps the classes' neighbour lists apart.
    vectors.append(_unit(np.cos(angle) * eye[main] + np.sin(angle) * eye[side + i % 2] - 0.05 * eye[other]))
    good = (i not in A_LOW_AESTHETIC) if in_a else (i in B_GOOD)
    meta["image_path"].append(f"{i:03d}.png")
    meta["caption"].append(f"candidate {i}")
    meta["url"].append(f"http://unused.invalid/{i}.jpg")
    meta["aesthetic"].append(6.5 if good else 4.5)
    meta["NSFW"].append("NSFW" if i in A_NSFW else "UNLIKELY")
    if i not in A_MISSING:
      colour = (250, 10, 10) if i in A_RED else (i * 2, 100, 200 - i * 2)  # red <= 178: only A_RED is flagged
      Image.new("RGB", (40 + i % 7, 36), colour).save(images / f"{i:03d}.png")
  folder = write_index(root / "index", np.asarray(vectors, np.float32), meta)
  return folder, images


def case_config(index_folder: Path, image_root: Path):
  from jax_aug.study.config_files import base_config

  config = base_config(REPO_ROOT / "configs", "retrieval", "tiny")
  config.classes = (CLASS_A, CLASS_B)
  config.images_per_class = IMAGES_PER_CLASS
  config.index.folder = str(index_folder)
  config.index.deduplicate = False
  config.download.source = "local"
  config.download.image_root = str(image_root)
  config.download.chunk_size = 2
  config.download.image_size = 32
  return config


def red_safety_fn(delay_s: float = 0.0):
  """Flags images whose mean red exceeds 200 (the test's stand-in for SD's checker), optionally slowly."""

  def check(images: np.ndarray) -> np.ndarray:
    time.sleep(delay_s)
    return images[..., 0].reshape(len(images), -1).mean(axis=1) > 200

  return check


def case_components(config, delay_s: float = 0.0, calls: list | None = None):
  from jax_aug.retrieval.index import LocalIndex
  from jax_aug.retrieval.pipeline import Components

  queries = case_queries()
  index = LocalIndex(config.index.folder, columns=list(config.index.columns))

  class Recording:
    def search(self, query, k, *, deduplicate):
      if calls is not None:
        calls.append((int(np.argmax(query)), k))
      return index.search(query, k, deduplicate=deduplicate)

  def embed(prompts):
    # The prompts are the classes' no-ws prompts, in class order.
    return np.stack([queries[CLASS_A] if "tench" in p else queries[CLASS_B] for p in prompts])

  return Components(embed_queries=embed, backend=Recording(), safety_fn=red_safety_fn(delay_s), aesthetic_fn=None)
