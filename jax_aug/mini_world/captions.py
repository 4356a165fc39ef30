"""Web alt-text for corpus images: caption styles drawn in fixed proportions (docs/mini_world.md).

Pure functions of (concept, what was drawn, the item's generator). Class names come from the same WordNet
data and the same w(n) as the study's prompts (jax_aug.data.prompts), so the no-ws style is exactly the
form the retrieval query uses.
"""

from __future__ import annotations

import colorsys

import numpy as np

from jax_aug.data.prompts import class_name, no_ws_name
from jax_aug.mini_world import concepts
from jax_aug.mini_world.drawing import Scene

# Class images: style -> probability.
CLASS_CAPTION_STYLES = {
  "lemma": 0.30,
  "full_name": 0.10,
  "no_ws": 0.15,
  "hypernym": 0.15,
  "descriptive": 0.10,
  "noisy": 0.12,
  "wrong": 0.08,
}
STYLE_WORD_P = 0.3
DISTRACTOR_LEMMA_P = 0.1

_NAME_TEMPLATES = (
  "{}",
  "a photo of a {}",
  "photo of the {}",
  "{} on a {bg} background",
  "my {}!!",
  "{} for sale",
  "the {} in the picture",
  "close-up of a {}",
  "{} | stock photo",
  "a {} i saw today",
  "high quality {} image",
  "{}, {bg}",
)
_NO_WS_TEMPLATES = ("A photo of {}.", "{}", "{}.jpg", "{} stock image", "photo: {}", "{} - free download")
_HYPERNYM_TEMPLATES = ("a {}", "{} in nature", "picture of a {}", "{} photo", "some {}", "{} on {bg}")
_STYLE_WORDS = {
  "photo": ("photo", "photograph"),
  "cartoon": ("cartoon", "clipart"),
  "sketch": ("sketch", "drawing"),
  "painting": ("painting", "artwork"),
  "bw": ("black and white", "monochrome"),
}
_NOISY = (
  "IMG_{n:04d}.JPG",
  "DSC{n:05d}",
  "untitled",
  "image",
  "free shipping best price",
  "click here",
  "photo {n}",
  "screenshot_{n}",
  "download now",
  "product image {n}",
  "thumbnail",
  "new post",
)
NSFW_CAPTIONS = (
  "nsfw pic",
  "explicit adult photo",
  "18+ only",
  "nsfw content",
  "adult image, explicit",
  "xxx hot pic {n}",
  "not safe for work",
)
_DISTRACTOR = {
  "texture": ("abstract background", "seamless pattern", "texture wallpaper", "{bg} pattern", "background"),
  "landscape": ("landscape", "beautiful view", "empty {bg}", "horizon", "nature scenery"),
  "logo": ("logo design", "vector icon", "geometric shape", "abstract logo", "company logo {n}"),
  "document": ("document scan", "text page", "screenshot", "invoice template", "notes"),
}
_COLOUR_NAMES = (
  (0.0, "red"),
  (0.05, "orange"),
  (0.11, "yellow"),
  (0.2, "green"),
  (0.45, "cyan"),
  (0.6, "blue"),
  (0.75, "purple"),
  (0.9, "pink"),
  (1.0, "red"),
)


def colour_word(rgb) -> str:
  h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
  if v < 0.25:
    return "black"
  if s < 0.15:
    return "white" if v > 0.8 else "grey"
  return next(name for limit, name in _COLOUR_NAMES if h <= limit + 0.025)


def _pick(rng: np.random.Generator, options):
  return options[int(rng.integers(len(options)))]


def _lemma_caption(wnid: str, background: str, rng: np.random.Generator) -> str:
  info = concepts.CONCEPT_BY_WNID[wnid].info
  return _pick(rng, _NAME_TEMPLATES).format(_pick(rng, info.lemmas), bg=background)


def class_caption(wnid: str, scene: Scene, background: str, rng: np.random.Generator) -> tuple[str, str]:
  """(caption, caption style) of a corpus image of class `wnid`."""
  info = concepts.CONCEPT_BY_WNID[wnid].info
  styles = list(CLASS_CAPTION_STYLES)
  style = styles[rng.choice(len(styles), p=list(CLASS_CAPTION_STYLES.values()))]
  n = int(rng.integers(10000))
  match style:
    case "lemma":
      text = _lemma_caption(wnid, background, rng)
    case "full_name":
      text = _pick(rng, _NAME_TEMPLATES).format(class_name(info), bg=background)
    case "no_ws":
      text = _pick(rng, _NO_WS_TEMPLATES).format(no_ws_name(info))
    case "hypernym":
      text = _pick(rng, _HYPERNYM_TEMPLATES).format(info.hypernyms[int(rng.integers(2))], bg=background)
    case "descriptive":
      text = f"{colour_word(scene.colour)} {_pick(rng, _STYLE_WORDS[scene.style])} on a {background} background"
    case "noisy":
      text = _pick(rng, _NOISY).format(n=n)
    case _:  # wrong: another class's lemma caption
      others = [w for w in concepts.WNIDS if w != wnid]
      text = _lemma_caption(_pick(rng, others), background, rng)
  if style in ("lemma", "full_name", "hypernym", "wrong") and rng.uniform() < STYLE_WORD_P:
    text = (
      f"{_pick(rng, _STYLE_WORDS[scene.style])} of {text}"
      if rng.uniform() < 0.5
      else f"{text} {_pick(rng, _STYLE_WORDS[scene.style])}"
    )
  return text, style


def other_caption(concept: str, family: str | None, background: str, rng: np.random.Generator) -> tuple[str, str]:
  """(caption, style) of an NSFW-concept image (family None) or a distractor of `family`."""
  n = int(rng.integers(10000))
  if concept == concepts.NSFW:
    return _pick(rng, NSFW_CAPTIONS).format(n=n), "nsfw"
  if rng.uniform() < DISTRACTOR_LEMMA_P:
    return _lemma_caption(_pick(rng, concepts.WNIDS), background, rng), "wrong"
  return _pick(rng, _DISTRACTOR[family]).format(n=n, bg=background), "distractor"
