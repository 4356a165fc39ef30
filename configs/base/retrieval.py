"""Retrieval block (paper method 10): nearest neighbours of the no-ws simple prompt in the DM's training
data, in CLIP ViT-L/14 space, 130 images per class after filters, k from 1.4 x 130 up to 6 x 1.4 x 130.

Paper scale expects a self-hosted LAION index (the public knn.laion.ai service is gone and LAION-5B was
withdrawn; Re-LAION-5B replaced it): either a local folder in clip-retrieval's layout (`index.folder`)
or a running `clip back` (`index.backend="clip_back"`, `index.url`). Tiny draws a synthetic collection,
indexes it with a tiny random CLIP and reads images from local files: the same code path in seconds.
"""

import ml_collections

from jax_aug.data.synthetic import DEFAULT_WNIDS as TINY_WNIDS

PAPER_IMAGES_PER_CLASS = 130


def get(scale: str) -> ml_collections.ConfigDict:
  tiny = scale == "tiny"
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.classes = TINY_WNIDS if tiny else None  # None: all classes of the dataset (ImageNet: its 1000)
  # The dataset the class ids belong to: a splits/classes.json the data stage wrote (jax_aug/data/classes.py;
  # the study sets it); empty: ImageNet.
  c.dataset_classes = ""
  c.images_per_class = 4 if tiny else PAPER_IMAGES_PER_CLASS
  # Gradual k: round(m * k_factor * images_per_class) for m = 1..max_multiple (182, 364, ..., 1092).
  c.k_factor = 1.4
  c.max_multiple = 6

  c.clip = ml_collections.ConfigDict()
  # A local folder or hub id of a two-tower CLIP; "tiny" = random-init tiny FlaxCLIPModel (real tokenizer).
  c.clip.model = "tiny" if tiny else "openai/clip-vit-large-patch14"
  c.clip.from_pt = False
  c.clip.seed = 0
  c.clip.tiny_image_size = 32

  c.index = ml_collections.ConfigDict()
  c.index.backend = "local"  # "local" (faiss in-process) or "clip_back" (REST)
  c.index.folder = "" if tiny else "/data/laion5b_index"  # tiny: empty = synthetic index in the workdir
  c.index.columns = ("url", "caption", "image_path", "aesthetic", "NSFW")
  c.index.nprobe = ml_collections.FieldReference(None, field_type=int)  # IVF indexes only
  c.index.memory_map = True
  # clip-retrieval's duplicate detector (paper Sec. 3.2). Tiny: off, because a random-init tiny CLIP maps
  # all images within cosine 0.9999 of each other and the detector would keep one image per query.
  c.index.deduplicate = not tiny
  c.index.dedup_threshold = 0.94
  c.index.url = "http://127.0.0.1:1234"
  c.index.indice_name = "laion5B"
  c.index.timeout_s = 60.0
  c.index.retries = 3
  c.index.backoff_s = 2.0
  c.index.synthetic = ml_collections.ConfigDict(dict(per_class=12, image_size=48, seed=0))

  c.filters = ml_collections.ConfigDict()
  c.filters.min_aesthetic = ml_collections.FieldReference(5.0, field_type=float)  # None disables
  c.filters.aesthetic_column = "aesthetic"
  # LAION's aesthetic head (.safetensors/.npz) applied to the downloaded image's CLIP embedding, for
  # indexes without an aesthetic column; empty: the column is required.
  c.filters.aesthetic_predictor = ""
  c.filters.nsfw_column = "NSFW"
  c.filters.nsfw_unsafe_values = ("NSFW",)
  # SD v1.4 folder/hub id whose safety checker screens the downloaded pixels (paper Sec. 3.2). Tiny:
  # disabled, because a random-init checker flags arbitrary images (tests inject their own checker).
  c.filters.safety_checker = "" if tiny else "CompVis/stable-diffusion-v1-4"
  # Size filters on the decoded image (ours; the paper states none). Shorter side: below 128 px a 224 px
  # training crop is upsampled more than 1.75x (placeholders, icons, thumbnails); tiny's synthetic images
  # are 36..48 px. Aspect ratio (longer / shorter): above 3 a square crop shows under a third of the image
  # (strips, banners). None disables either.
  c.filters.min_shorter_side = ml_collections.FieldReference(16 if tiny else 128, field_type=int)
  c.filters.max_aspect_ratio = ml_collections.FieldReference(3.0, field_type=float)

  c.download = ml_collections.ConfigDict()
  c.download.source = "local" if tiny else "url"  # "url": img2dataset; "local": metadata path column
  c.download.url_column = "url"
  c.download.path_column = "image_path"
  c.download.image_root = ""  # "local" source: paths are relative to this folder (tiny: the synthetic index's)
  c.download.image_size = 64 if tiny else 512  # shorter side, downscale only (SD v1.4's 512 px)
  c.download.max_bytes = 32 * 1024 * 1024
  c.download.max_pixels = 64 * 1024 * 1024
  c.download.background = (255, 255, 255)  # under transparent pixels (RGBA, LA, palette transparency)
  # img2dataset's distributor: "multiprocessing" (processes x threads on this host) or "pyspark" (Spark
  # tasks over a cluster's hosts, for LAION-scale downloads; needs pyspark installed: docs/retrieval.md).
  c.download.distributor = "multiprocessing"
  c.download.processes = 1 if tiny else 4
  c.download.threads = 8 if tiny else 64
  c.download.timeout_s = 10
  c.download.retries = 1
  c.download.chunk_size = 4 if tiny else 182  # candidates per img2dataset call (the resume granularity)
  return c
