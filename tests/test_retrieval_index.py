"""The two kNN backends' edges: clip back client retries, timeouts and a clear error when the server is
down; the local index memory-mapped or not, over several parquet files."""

from __future__ import annotations

import http.server
import json
import threading
import time

import ml_collections
import numpy as np
import pytest
from conftest import free_port

from jax_aug.retrieval.builder import write_index
from jax_aug.retrieval.index import ClipBackClient, ClipBackUnavailableError, LocalIndex, open_backend

QUERY = np.array([1.0, 0.0, 0.0], np.float32)


class _Flaky(http.server.ThreadingHTTPServer):
  daemon_threads = True


def _serve(answers):
  """POST server on 127.0.0.1 answering each request with the next (status, body, delay) of `answers`."""
  requests_seen = []

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
      body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
      requests_seen.append(body)
      status, payload, delay = answers[min(len(requests_seen), len(answers)) - 1]
      time.sleep(delay)
      data = json.dumps(payload).encode()
      try:
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
      except (BrokenPipeError, ConnectionResetError):
        pass

    def log_message(self, *args):
      pass

  server = _Flaky(("127.0.0.1", 0), Handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server, f"http://127.0.0.1:{server.server_address[1]}", requests_seen


def test_client_retries_server_errors_then_succeeds():
  result = [{"id": 7, "similarity": 0.9, "url": "http://a/7.jpg", "caption": "seven"}]
  server, url, seen = _serve([(503, "busy", 0.0), (200, result, 0.0)])
  try:
    neighbours = ClipBackClient(url, "laion", timeout_s=5, retries=2, backoff_s=0.01).search(QUERY, 3, deduplicate=True)
  finally:
    server.shutdown()
  assert len(seen) == 2
  assert seen[1] == {
    "embedding_input": [1.0, 0.0, 0.0],
    "modality": "image",
    "indice_name": "laion",
    "num_images": 3,
    "num_result_ids": 3,
    "deduplicate": True,
    "use_mclip": False,
    "use_safety_model": False,
    "use_violence_detector": False,
  }
  assert [(n.id, n.similarity, n.metadata) for n in neighbours] == [(7, 0.9, {"url": "http://a/7.jpg", "caption": "seven"})]


def test_client_does_not_retry_a_refused_query():
  server, url, seen = _serve([(400, {"message": "bad indice_name"}, 0.0)])
  try:
    with pytest.raises(RuntimeError, match="refused the query .*HTTP 400"):
      ClipBackClient(url, "nope", retries=3, backoff_s=0.01).search(QUERY, 3, deduplicate=False)
  finally:
    server.shutdown()
  assert len(seen) == 1


def test_client_times_out_and_reports_the_server_down():
  server, url, seen = _serve([(200, [], 2.0)])
  try:
    with pytest.raises(ClipBackUnavailableError, match="is down or failing: 2 attempts"):
      ClipBackClient(url, "laion", timeout_s=0.3, retries=1, backoff_s=0.01).search(QUERY, 3, deduplicate=False)
  finally:
    server.shutdown()
  assert len(seen) == 2
  nobody = f"http://127.0.0.1:{free_port()}"
  with pytest.raises(ClipBackUnavailableError, match="Start it"):
    ClipBackClient(nobody, "laion", timeout_s=1, retries=1, backoff_s=0.01).search(QUERY, 3, deduplicate=False)


@pytest.mark.parametrize("factory", ["Flat", "IVF4,PQ4x4"])
def test_local_index_memory_mapped_equals_loaded(tmp_path, factory):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((300, 16)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  write_index(tmp_path, x, {"url": [f"u{i}" for i in range(300)]}, index_factory=factory, rows_per_file=70)
  mapped, loaded = LocalIndex(tmp_path, memory_map=True), LocalIndex(tmp_path, memory_map=False)
  for query in x[:5]:
    a, b = mapped.search(query, 20, deduplicate=True), loaded.search(query, 20, deduplicate=True)
    assert [(n.id, n.similarity, n.metadata) for n in a] == [(n.id, n.similarity, n.metadata) for n in b]
    assert all(n.metadata["url"] == f"u{n.id}" for n in a)  # row i across 5 parquet files = vector i
  if factory == "Flat":
    assert mapped.search(x[3], 1, deduplicate=False)[0].id == 3


def test_open_backend_refuses_bad_settings(tmp_path):
  config = ml_collections.ConfigDict(dict(backend="elastic", dedup_threshold=0.94))
  with pytest.raises(ValueError, match="unknown retrieval index backend 'elastic'"):
    open_backend(config)
  config = ml_collections.ConfigDict(
    dict(
      backend="clip_back",
      dedup_threshold=0.9,
      url="http://127.0.0.1:1",
      indice_name="x",
      timeout_s=1.0,
      retries=0,
      backoff_s=0.0,
    )
  )
  with pytest.raises(ValueError, match="fixed threshold of 0.94"):
    open_backend(config)
  with pytest.raises(ValueError, match="must start with http"):
    ClipBackClient("127.0.0.1:1234", "x")
  write_index(tmp_path, np.eye(3, dtype=np.float32), {"url": ["a", "b", "c"]})
  (tmp_path / "metadata" / "00001.parquet").write_bytes((tmp_path / "metadata" / "00000.parquet").read_bytes())
  with pytest.raises(ValueError, match="holds 3 vectors but metadata has 6 rows"):
    LocalIndex(tmp_path)
