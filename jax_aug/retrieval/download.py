"""Fetches retrieved candidates' images: URLs with img2dataset, or local files when the index metadata
holds paths. Every image is untrusted and ends up decoded by `jax_aug.io.decode_image` (byte cap,
decompression-bomb guard, content check), then resized here.

What img2dataset can and cannot enforce (read from img2dataset 1.47's downloader): it downloads in
parallel with a per-request timeout, retries and per-URL status, but reads each body whole
(`urlopen(...).read()`, no byte cap) and decodes with OpenCV (whose bomb guard is 2^30 pixels). So it runs
with `disable_all_reencoding=True`: it never decodes, it hands over the raw bytes, and our decode applies
our limits before any pixel is decompressed. The memory of one oversized body is bounded only by the
server; img2dataset keeps at most 2 x thread_count bodies in flight.

File names never come from a URL or caption: the caller names each item by its index id.

`download.distributor` picks img2dataset's distributor: "multiprocessing" (processes on this host) or
"pyspark", which runs the downloads as Spark tasks over a cluster's hosts, as img2dataset documents for
LAION-scale downloads (it uses the active SparkSession, e.g. under spark-submit, or starts a local one).
pyspark is not a dependency of this package: install it on the cluster.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from jax_aug.io import ImageDecodeError, decode_image, load_image_file


@dataclasses.dataclass(frozen=True)
class Fetched:
  """The outcome for one candidate: an RGB image resized to the configured size, or why there is none."""

  id: int
  image: Image.Image | None
  error: str | None
  status: str  # "success", "failed_to_download", "failed_to_decode"
  size: tuple[int, int] | None = None  # (width, height) as decoded (EXIF-upright), before the resize


DISTRIBUTORS = ("multiprocessing", "pyspark")


def distributor(config) -> str:
  """The configured img2dataset distributor, refused early (before any query) when unknown or when
  pyspark is asked for but not installed."""
  name = config.distributor
  if name not in DISTRIBUTORS:
    raise ValueError(f"unknown download.distributor {name!r}: expected one of {DISTRIBUTORS}")
  if name == "pyspark":
    try:
      import pyspark  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError as e:
      raise ImportError(
        "download.distributor='pyspark' needs pyspark, which is not installed: pip install pyspark"
        " (on every host of the Spark cluster), or set download.distributor='multiprocessing'"
        " to download on this host"
      ) from e
  return name


def _options(config) -> dict:
  """decode_image's options for downloads: our limits, EXIF orientation applied (phone photos stand
  upright), transparency over the configured background."""
  return {
    "max_bytes": config.max_bytes,
    "max_pixels": config.max_pixels,
    "exif_orientation": True,
    "background": tuple(config.background),
  }


def _success(item_id: int, image: Image.Image, config) -> Fetched:
  return Fetched(item_id, resize_shorter_side(image, config.image_size), None, "success", image.size)


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
  """Scales so the shorter side is `size` (aspect kept, like img2dataset's keep_ratio); never upscales,
  since upscaling adds no information and the classifier's random resized crop rescales anyway."""
  width, height = image.size
  shorter = min(width, height)
  if shorter <= size:
    return image
  scale = size / shorter
  return image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BICUBIC)


def _decode(item_id: int, data: bytes, source: str, config) -> Fetched:
  try:
    image = decode_image(data, source=source, **_options(config))
  except ImageDecodeError as e:
    return Fetched(item_id, None, str(e), "failed_to_decode")
  return _success(item_id, image, config)


def fetch_urls(items: Sequence[tuple[int, str]], config, *, scratch: str | os.PathLike) -> list[Fetched]:
  """Downloads (id, url) pairs with img2dataset into a temporary folder under `scratch`, then decodes
  each body with our limits. One outcome per input item, in input order; failures never raise."""
  # albumentations (imported by img2dataset) otherwise asks PyPI for a newer version on import.
  os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
  spread = distributor(config)
  import img2dataset
  import pyarrow as pa
  import pyarrow.parquet as pq

  if not items:
    return []
  ids = [int(i) for i, _ in items]
  if len(set(ids)) != len(ids):
    raise ValueError("fetch_urls: candidate ids must be unique")
  Path(scratch).mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=scratch, prefix=".img2dataset-") as tmp:
    url_list = Path(tmp) / "urls.parquet"
    pq.write_table(pa.table({"url": [str(u) for _, u in items], "candidate": ids}), url_list)
    output = Path(tmp) / "out"
    previous_sigint = signal.getsignal(signal.SIGINT)
    img2dataset.download(
      url_list=str(url_list),
      input_format="parquet",
      url_col="url",
      output_format="parquet",
      output_folder=str(output),
      save_additional_columns=["candidate"],
      disable_all_reencoding=True,
      processes_count=config.processes,
      thread_count=config.threads,
      timeout=config.timeout_s,
      retries=config.retries,
      number_sample_per_shard=max(len(items), 10),
      compute_hash=None,
      extract_exif=False,
      incremental_mode="incremental",
      enable_wandb=False,
      distributor=spread,
    )
    # img2dataset installs a SIGINT handler that exits with status 0; give Ctrl-C back to the caller.
    signal.signal(signal.SIGINT, previous_sigint)
    rows = {}
    for shard in sorted(output.glob("*.parquet")):
      table = pq.read_table(shard, columns=["candidate", "url", "status", "error_message", "jpg"])
      for row in table.to_pylist():
        rows[int(row["candidate"])] = row
  outcomes = []
  for item_id, url in items:
    row = rows.get(item_id)
    if row is None:
      outcomes.append(Fetched(item_id, None, "img2dataset returned no status for this url", "failed_to_download"))
    elif row["status"] != "success" or row["jpg"] is None:
      outcomes.append(Fetched(item_id, None, row["error_message"] or row["status"], "failed_to_download"))
    else:
      outcomes.append(_decode(item_id, row["jpg"], f"candidate {item_id} ({url})", config))
  return outcomes


def fetch_local(items: Sequence[tuple[int, str]], config, *, root: str | os.PathLike) -> list[Fetched]:
  """Reads (id, relative path) pairs under `root`; a path that is absolute or leaves `root` is refused
  (index metadata is as untrusted as a download)."""
  root = Path(root).resolve()
  outcomes = []
  for item_id, relative in items:
    path = (root / str(relative)).resolve()
    if Path(str(relative)).is_absolute() or not path.is_relative_to(root):
      outcomes.append(Fetched(item_id, None, f"path {relative!r} is outside the image root {root}", "failed_to_download"))
      continue
    try:
      image = load_image_file(path, **_options(config))
    except FileNotFoundError as e:
      outcomes.append(Fetched(item_id, None, str(e), "failed_to_download"))
    except ImageDecodeError as e:
      outcomes.append(Fetched(item_id, None, str(e), "failed_to_decode"))
    else:
      outcomes.append(_success(item_id, image, config))
  return outcomes
