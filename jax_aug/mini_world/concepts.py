"""What the mini world contains: its classes (real ILSVRC2012 wnids), the NSFW concept, the distractor
families, the corpus composition and the target dataset's per-class counts (docs/mini_world.md, "Design").

Everything here is fixed data or a pure function of the world seed; the design is fixed before any study
runs on the world and is not tuned to make a method win.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jax_aug.data.imagenet_classes import ClassInfo, class_by_wnid

WORLD_SEED = 0
# Bumped whenever the drawing, captions or counts change: a corpus or target dataset records it, and a
# reader refuses one of another version.
DESIGN_VERSION = 1
IMAGE_SIZE = 32

NSFW = "nsfw"
DISTRACTOR = "distractor"


@dataclasses.dataclass(frozen=True)
class Concept:
  """A drawable class: its wnid, base colour (HSV), whether its outline looks the same at any angle."""

  wnid: str
  hue: float
  saturation: float
  value: float
  rotation_symmetric: bool = False

  @property
  def info(self) -> ClassInfo:
    return class_by_wnid(self.wnid)


CLASSES: tuple[Concept, ...] = (
  Concept("n01443537", 0.07, 0.95, 1.0),  # goldfish
  Concept("n01491361", 0.58, 0.25, 0.6),  # tiger shark
  Concept("n02012849", 0.6, 0.05, 0.8),  # crane (bird)
  Concept("n03126707", 0.13, 0.9, 0.95),  # crane (machine)
  Concept("n02007558", 0.93, 0.55, 1.0),  # flamingo
  Concept("n02165456", 0.0, 0.95, 0.9),  # ladybug
  Concept("n02391049", 0.0, 0.0, 0.97),  # zebra
  Concept("n02317335", 0.04, 0.85, 0.95, True),  # starfish
  Concept("n07745940", 0.98, 0.9, 0.85),  # strawberry
  Concept("n07747607", 0.08, 1.0, 1.0, True),  # orange
  Concept("n07749582", 0.15, 0.9, 1.0),  # lemon
  Concept("n07753592", 0.14, 0.85, 1.0),  # banana
  Concept("n07873807", 0.1, 0.7, 0.9, True),  # pizza
  Concept("n07734744", 0.02, 0.85, 0.85),  # mushroom
  Concept("n03445777", 0.0, 0.0, 0.95, True),  # golf ball
  Concept("n04254680", 0.0, 0.0, 0.98, True),  # soccer ball
  Concept("n04409515", 0.2, 0.8, 0.95, True),  # tennis ball
  Concept("n06874185", 0.0, 0.0, 0.25),  # traffic light
  Concept("n04507155", 0.66, 0.8, 0.8),  # umbrella
  Concept("n04146614", 0.13, 0.95, 1.0),  # school bus
  Concept("n03345487", 0.0, 0.9, 0.9),  # fire engine
  Concept("n03530642", 0.1, 0.85, 0.9, True),  # honeycomb
  Concept("n03590841", 0.07, 1.0, 0.95),  # jack-o'-lantern
  Concept("n09472597", 0.07, 0.5, 0.45),  # volcano
)
WNIDS: tuple[str, ...] = tuple(c.wnid for c in CLASSES)
CONCEPT_BY_WNID = {c.wnid: c for c in CLASSES}
# The lemma-sharing pair (both have the single lemma "crane").
CRANE_BIRD, CRANE_MACHINE = "n02012849", "n03126707"

DISTRACTOR_FAMILIES = ("texture", "landscape", "logo", "document")

# Corpus composition (50,000 images).
CORPUS_PER_CLASS = 1650
CORPUS_NSFW = 1400
CORPUS_DISTRACTORS = 9000
CORPUS_SIZE = CORPUS_PER_CLASS * len(CLASSES) + CORPUS_NSFW + CORPUS_DISTRACTORS

# Target dataset: ImageNet's per-class train counts (732..1300) scaled by TARGET_SCALE; the test split
# ("val/", ILSVRC2012's validation) keeps ImageNet's 50 per class.
IMAGENET_MIN_COUNT, IMAGENET_MAX_COUNT = 732, 1300
TARGET_SCALE = 0.2
TARGET_SHORT_CLASSES = 8
TARGET_TEST_PER_CLASS = 50


def corpus_plan(seed: int = WORLD_SEED, size: int = CORPUS_SIZE) -> np.ndarray:
  """The concept of every corpus item (wnid, NSFW or DISTRACTOR), one seeded permutation of the
  composition. `size` < CORPUS_SIZE takes the first `size` items of the full plan (tests)."""
  labels = np.array(
    [c.wnid for c in CLASSES for _ in range(CORPUS_PER_CLASS)] + [NSFW] * CORPUS_NSFW + [DISTRACTOR] * CORPUS_DISTRACTORS
  )
  if not 0 < size <= len(labels):
    raise ValueError(f"corpus size must be in 1..{len(labels)}, got {size}")
  return labels[np.random.default_rng([seed, 0]).permutation(len(labels))][:size]


def imagenet_like_counts(seed: int = WORLD_SEED) -> dict[str, int]:
  """Unscaled ImageNet-like train counts N_c: TARGET_SHORT_CLASSES classes below 1300 (one exactly 732,
  the others uniform in 733..1299), the rest 1300."""
  rng = np.random.default_rng([seed, 3])
  short = rng.choice(len(CLASSES), TARGET_SHORT_CLASSES, replace=False)
  counts = {c.wnid: IMAGENET_MAX_COUNT for c in CLASSES}
  for k, position in enumerate(short):
    counts[CLASSES[position].wnid] = (
      IMAGENET_MIN_COUNT if k == 0 else int(rng.integers(IMAGENET_MIN_COUNT + 1, IMAGENET_MAX_COUNT))
    )
  return counts


def target_train_counts(seed: int = WORLD_SEED, scale: float = TARGET_SCALE) -> dict[str, int]:
  """n_c = round(N_c * scale) train images per class of the target dataset."""
  return {wnid: int(round(n * scale)) for wnid, n in imagenet_like_counts(seed).items()}
