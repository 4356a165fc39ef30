"""The mini world's quality bars on trained tiny-CLIP weights (docs/mini_world.md, "Quality bars").

  python scripts/check_mini_world.py --data=mini_world_runs/data --clip=mini_world_runs/train/export/clip \
      --workdir=mini_world_runs/check
  python scripts/check_mini_world.py --data=... --clip_checkpoint=mini_world_runs/train/clip/checkpoint.msgpack \
      --workdir=...                                                     # an unfinished run's latest checkpoint

Prints and writes <workdir>/quality.json: zero-shot top-1 on the target test split with "A photo of w(n)."
(bar 0.70; also per class, with the classes its images were taken for) and retrieval precision of each
class's no-ws prompt over the corpus index (bar 0.80).
"""

import json
import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from jax_aug.io import atomic_write_json
from jax_aug.mini_world import arrays, concepts, quality
from jax_aug.mini_world.corpus import read_metadata
from jax_aug.mini_world.train_clip import export_checkpoint
from jax_aug.retrieval.clip_model import embed_images, embed_texts, load_clip
from jax_aug.retrieval.index import LocalIndex

# pylint: enable=wrong-import-position

_DATA = flags.DEFINE_string("data", None, "folder written by scripts/make_mini_world.py", required=True)
_CLIP = flags.DEFINE_string("clip", None, "exported tiny CLIP folder")
_CLIP_CHECKPOINT = flags.DEFINE_string("clip_checkpoint", None, "or an unfinished clip stage's checkpoint.msgpack")
_WORKDIR = flags.DEFINE_string("workdir", None, "cache, index and quality.json", required=True)


def main(argv):
  del argv
  data, workdir = Path(_DATA.value), Path(_WORKDIR.value)
  if (_CLIP.value is None) == (_CLIP_CHECKPOINT.value is None):
    raise app.UsageError("give exactly one of --clip (exported folder) and --clip_checkpoint")
  clip_folder, step = Path(_CLIP.value or workdir / "clip_from_checkpoint"), None
  if _CLIP_CHECKPOINT.value:
    clip_folder, step = export_checkpoint(_CLIP_CHECKPOINT.value, clip_folder)
  clip = load_clip(str(clip_folder))
  prompts = embed_texts(clip, quality.class_prompts())
  images, labels = arrays.target_arrays(data / "target", "val", workdir / "cache")
  image_embeddings = embed_images(clip, list(images), batch_size=256)
  zero_shot = quality.zero_shot_top1(image_embeddings, labels, prompts)
  zero_shot_per_class = quality.zero_shot_per_class(image_embeddings, labels, prompts, concepts.WNIDS)
  corpus = arrays.CorpusArrays(data / "corpus", workdir / "cache")
  embeddings = arrays.cached_embeddings(
    workdir / "cache",
    "corpus_clip_image",
    clip_folder,
    lambda: embed_images(clip, list(corpus.images), batch_size=256, progress="embedding corpus"),
  )
  index_dir = quality.build_corpus_index(
    workdir / "index" / clip_folder.name,
    embeddings,
    read_metadata(data / "corpus", columns=["image_path", "caption", "concept"]),
  )
  precision = quality.retrieval_precision(LocalIndex(index_dir, columns=["concept"]), prompts, concepts.WNIDS)
  result = {
    "clip": str(clip_folder),
    "clip_step": step,
    "zero_shot_top1": zero_shot,
    "zero_shot_bar": quality.ZERO_SHOT_BAR,
    "retrieval_precision_mean": sum(precision.values()) / len(precision),
    "retrieval_bar": quality.RETRIEVAL_BAR,
    "retrieval_precision": precision,
    "zero_shot_per_class": zero_shot_per_class,
  }
  atomic_write_json(workdir / "quality.json", result)
  print(json.dumps({k: v for k, v in result.items() if k not in ("retrieval_precision", "zero_shot_per_class")}, indent=1))


if __name__ == "__main__":
  app.run(main)
