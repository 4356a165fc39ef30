"""Digests that tell whether two machines hold the same mini world and drew the same study splits:

  python scripts/fingerprint_mini_world.py --world=$JAX_AUG_CACHE/mini_world [--study=runs/mini]

A study's Table 1 can move between machines (docs/mini_world.md, "The whole study from a fresh clone"); equal
digests rule out the data and leave the arithmetic. Each digest is independent of where the folders lie:
- every target image's and every corpus image's decoded RGB pixels (with its path relative to the world
  folder and its shape), in sorted path order: equal pixels, whatever the JPEG bytes;
- with --study, each split manifest of the study (`data/splits/*.jsonl`), its rows in file order with the image
  paths made relative to the world folder.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
from absl import app, flags
from PIL import Image
from tqdm import tqdm

_WORLD = flags.DEFINE_string("world", None, "a prepared mini world folder (mini_world.folder)", required=True)
_STUDY = flags.DEFINE_string("study", "", "a mini study's workdir, for its split manifests (optional)")

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def pixels_digest(root: Path, folder: Path) -> tuple[int, str]:
  """(images, sha256) over the decoded pixels of every image under `folder`, paths relative to `root`."""
  paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
  digest = hashlib.sha256()
  for path in tqdm(paths, desc=f"decoding {folder.name}", unit="image"):
    with Image.open(path) as image:
      pixels = np.asarray(image.convert("RGB"))
    digest.update(f"{path.relative_to(root).as_posix()}\0{pixels.shape}\0".encode())
    digest.update(pixels.tobytes())
  return len(paths), digest.hexdigest()


def split_digest(manifest: Path, world: Path) -> tuple[int, str]:
  """(rows, sha256) of a split manifest's rows, each image path relative to the world folder."""
  digest = hashlib.sha256()
  rows = manifest.read_text(encoding="utf-8").splitlines()
  for line in rows:
    row = json.loads(line)
    path = Path(row["path"])
    if not path.is_relative_to(world):
      raise ValueError(f"{manifest}: {path} is not under the world folder {world}; pass the study's --world")
    row["path"] = path.relative_to(world).as_posix()
    digest.update(json.dumps(row, sort_keys=True).encode() + b"\n")
  return len(rows), digest.hexdigest()


def main(argv):
  del argv
  world = Path(_WORLD.value).expanduser().resolve()
  for part in ("target", "corpus"):
    if not (world / part).is_dir():
      raise FileNotFoundError(f"{world / part} is missing: --world must be a prepared mini world folder")
  record = {name: pixels_digest(world, world / name) for name in ("target", "corpus")}
  if _STUDY.value:
    splits = Path(_STUDY.value) / "data" / "splits"
    manifests = sorted(splits.glob("*.jsonl"))
    if not manifests:
      raise FileNotFoundError(f"no split manifests in {splits}: --study must be a mini study's workdir")
    record.update({f"splits/{m.name}": split_digest(m, world) for m in manifests})
  for name, (count, digest) in record.items():
    print(f"{name:28s} {count:7d}  sha256 {digest}")


if __name__ == "__main__":
  app.run(main)
