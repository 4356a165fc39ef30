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

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIP_BACK_VENV = REPO_ROOT / ".venv-clip-back"
CLIP_BACK_PYTHON = CLIP_BACK_VENV / "bin" / "python"
LAUNCHER = REPO_ROOT / "jax_aug" / "retrieval" / "clip_back_launcher.py"


def ensure_clip_back_venv() -> Path:
  """clip-retrieval 2.45.0 in its own venv (numpy<2), created on first use (~95 s, 6.5 GB) and reused."""
  probe = [str(CLIP_BACK_PYTHON), "-c", "import clip_retrieval.clip_back, all_clip, flask"]
  if CLIP_BACK_PYTHON.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
    return CLIP_BACK_PYTHON
  subprocess.run(["python3.11", "-m", "venv", str(CLIP_BACK_VENV)], check=True)
  # Without the setuptools cap clip-retrieval's dependencies miss pkg_resources.
  install = subprocess.run([str(CLIP_BACK_VENV / "bin" / "pip"), "install", "-q", "clip-retrieval==2.45.0",
                            "setuptools<81"], capture_output=True, text=True)
  if install.returncode != 0:
    pytest.fail(f"installing clip-retrieval into {CLIP_BACK_VENV} failed:\n{install.stderr[-4000:]}")
  subprocess.run(probe, check=True)
  return CLIP_BACK_PYTHON


@contextlib.contextmanager
def clip_back_server(indices: dict[str, str], workdir: Path, port: int, columns: str, timeout_s: float = 240):
  """Runs the launcher over `indices` ({name: index folder}) and yields the server's base URL."""
  python = ensure_clip_back_venv()
  indices_json = workdir / "indices.json"
  indices_json.write_text(json.dumps(indices))
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
  log_path = workdir / "clip_back.log"
  with open(log_path, "w") as log:
    proc = subprocess.Popen(
        [str(python), str(LAUNCHER), f"--indices_paths={indices_json}", f"--port={port}", f"--columns={columns}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
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
