"""The data check alone: decodes every image of an ILSVRC folder or augmentation set once, with the decoder
training uses, and lists the bad ones.

  python check_data.py --data=/data/imagenet --workdir=runs/check_imagenet --num_workers=16

`--data` is an ILSVRC folder (train/ and val/ of <wnid>/ class folders), one split folder of <wnid>/ class
folders, or an augmentation set (a folder with manifest*.jsonl). Writes <workdir>/quarantine.jsonl (path,
reason, size, error of every bad image), summary.json (counts per reason, ignored non-image files, images
per second) and scanned.jsonl (progress: rerunning the same command resumes). `--strict` exits with an
error listing every bad image instead. See docs/data.md, "Bad data".
"""

import json
import logging

from absl import app, flags

from jax_aug import io
from jax_aug.data import check, sources

_DATA = flags.DEFINE_string("data", None, "ILSVRC folder, split folder or augmentation set to check")
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (quarantine.jsonl, summary.json)")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 0, "decoding processes (0: in this process)")
_STRICT = flags.DEFINE_bool("strict", False, "fail, listing every bad image, instead of quarantining")
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", io.DEFAULT_MAX_IMAGE_PIXELS, "pixel limit per image")
_MAX_BYTES = flags.DEFINE_integer("max_bytes", io.DEFAULT_MAX_IMAGE_BYTES, "encoded size limit per image")
flags.mark_flags_as_required(["data", "workdir"])


def main(argv):
  del argv
  logging.getLogger("jax_aug").setLevel(logging.INFO)
  reader = sources.ImageReader(options=io.DecodeOptions(max_bytes=_MAX_BYTES.value, max_pixels=_MAX_PIXELS.value))
  print(
    json.dumps(
      check.check_path(_DATA.value, _WORKDIR.value, num_workers=_NUM_WORKERS.value, strict=_STRICT.value, reader=reader),
      indent=2,
    )
  )


if __name__ == "__main__":
  app.run(main)
