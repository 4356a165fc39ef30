"""Builds jax_aug/assets/clip_tokenizer/{vocab.json,merges.txt}: CLIP's BPE in transformers' format.

SD v1.4's tokenizer is CLIP's (openai/clip-vit-large-patch14), but no model hub is reachable here. The
same BPE ships inside the open_clip_torch wheel as `open_clip/bpe_simple_vocab_16e6.txt.gz`; this script
downloads that wheel with pip (no dependencies, into a temp dir), and rebuilds the vocabulary exactly as
CLIP's `SimpleTokenizer` does: 256 byte tokens, their `</w>` forms, one token per merge, then
`<|startoftext|>`, `<|endoftext|>` (49408 tokens, 48894 merges).

Run once, commit the output:  python scripts/make_clip_tokenizer.py
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from absl import app, flags

from jax_aug.io import atomic_write_json, atomic_write_text

_OUT = flags.DEFINE_string(
  "out", str(Path(__file__).resolve().parents[1] / "jax_aug/assets/clip_tokenizer"), "Output folder."
)
_WHEEL_SPEC = flags.DEFINE_string("wheel", "open_clip_torch==3.2.0", "pip requirement of the wheel.")

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# CLIP uses the first 49152 - 256 - 2 merges of the file (its line 0 is a version header).
NUM_MERGES = 49152 - 256 - 2
EXPECTED_VOCAB_SIZE = 49408


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2/CLIP's reversible byte -> printable character map (printable bytes map to themselves)."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
  chars = list(printable)
  extra = 0
  for b in range(256):
    if b not in printable:
      printable.append(b)
      chars.append(256 + extra)
      extra += 1
  return dict(zip(printable, map(chr, chars)))


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
  tokens = list(bytes_to_unicode().values())
  tokens += [t + "</w>" for t in tokens]
  tokens += ["".join(pair) for pair in merges]
  tokens += ["<|startoftext|>", "<|endoftext|>"]
  return {token: index for index, token in enumerate(tokens)}


def read_bpe_from_wheel(requirement: str) -> str:
  with tempfile.TemporaryDirectory() as tmp:
    subprocess.run(
      [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp, requirement], check=True
    )
    wheels = list(Path(tmp).glob("*.whl"))
    if len(wheels) != 1:
      raise RuntimeError(f"expected one wheel for {requirement!r} in {tmp}, found {wheels}")
    with zipfile.ZipFile(wheels[0]) as wheel:
      return gzip.decompress(wheel.read(BPE_MEMBER)).decode("utf-8")


def make_tokenizer_files(bpe_text: str, out: Path) -> None:
  lines = bpe_text.split("\n")[1 : NUM_MERGES + 1]
  merges = [tuple(line.split()) for line in lines]
  vocab = build_vocab(merges)
  if len(vocab) != EXPECTED_VOCAB_SIZE:
    raise RuntimeError(f"built {len(vocab)} tokens, expected {EXPECTED_VOCAB_SIZE}")
  atomic_write_json(out / "vocab.json", vocab)
  atomic_write_text(out / "merges.txt", "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


def main(argv):
  del argv
  make_tokenizer_files(read_bpe_from_wheel(_WHEEL_SPEC.value), Path(_OUT.value))


if __name__ == "__main__":
  app.run(main)
