"""Prompt strategies of the paper (Sec. 3.1, methods 1-4 and 8): pure functions of (class, image index, seed).

Every random choice (template, background) comes from a generator seeded by (seed, class index, image
index), so any single prompt can be regenerated alone and a resumed sampling job asks for the same
prompts. Templates are drawn with replacement, as the paper does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from jax_aug.data.classes import DatasetClasses, require_fields
from jax_aug.data.imagenet_classes import ClassInfo, places365_categories

# CLIP's 80 ImageNet prompt templates, in the order of openai/CLIP
# notebooks/Prompt_Engineering_for_ImageNet.ipynb (`imagenet_templates`).
CLIP_IMAGENET_TEMPLATES = (
  "a bad photo of a {}.",
  "a photo of many {}.",
  "a sculpture of a {}.",
  "a photo of the hard to see {}.",
  "a low resolution photo of the {}.",
  "a rendering of a {}.",
  "graffiti of a {}.",
  "a bad photo of the {}.",
  "a cropped photo of the {}.",
  "a tattoo of a {}.",
  "the embroidered {}.",
  "a photo of a hard to see {}.",
  "a bright photo of a {}.",
  "a photo of a clean {}.",
  "a photo of a dirty {}.",
  "a dark photo of the {}.",
  "a drawing of a {}.",
  "a photo of my {}.",
  "the plastic {}.",
  "a photo of the cool {}.",
  "a close-up photo of a {}.",
  "a black and white photo of the {}.",
  "a painting of the {}.",
  "a painting of a {}.",
  "a pixelated photo of the {}.",
  "a sculpture of the {}.",
  "a bright photo of the {}.",
  "a cropped photo of a {}.",
  "a plastic {}.",
  "a photo of the dirty {}.",
  "a jpeg corrupted photo of a {}.",
  "a blurry photo of the {}.",
  "a photo of the {}.",
  "a good photo of the {}.",
  "a rendering of the {}.",
  "a {} in a video game.",
  "a photo of one {}.",
  "a doodle of a {}.",
  "a close-up photo of the {}.",
  "a photo of a {}.",
  "the origami {}.",
  "the {} in a video game.",
  "a sketch of a {}.",
  "a doodle of the {}.",
  "a origami {}.",
  "a low resolution photo of a {}.",
  "the toy {}.",
  "a rendition of the {}.",
  "a photo of the clean {}.",
  "a photo of a large {}.",
  "a rendition of a {}.",
  "a photo of a nice {}.",
  "a photo of a weird {}.",
  "a blurry photo of a {}.",
  "a cartoon {}.",
  "art of a {}.",
  "a sketch of the {}.",
  "a embroidered {}.",
  "a pixelated photo of a {}.",
  "itap of the {}.",
  "a jpeg corrupted photo of the {}.",
  "a good photo of a {}.",
  "a plushie {}.",
  "a photo of the nice {}.",
  "a photo of the small {}.",
  "a photo of the weird {}.",
  "the cartoon {}.",
  "art of the {}.",
  "a drawing of the {}.",
  "a photo of the large {}.",
  "a black and white photo of a {}.",
  "the plushie {}.",
  "a dark photo of a {}.",
  "itap of a {}.",
  "graffiti of the {}.",
  "a toy {}.",
  "itap of my {}.",
  "a photo of a cool {}.",
  "a photo of a small {}.",
  "a tattoo of the {}.",
)

# The object templates of textual inversion (Gal et al. 2022), as used by diffusers'
# examples/textual_inversion/textual_inversion{,_flax}.py (`imagenet_templates_small`), the
# implementation the paper's pseudo-word methods build on. '{}' is the pseudo-word.
TEXTUAL_INVERSION_TEMPLATES = (
  "a photo of a {}",
  "a rendering of a {}",
  "a cropped photo of the {}",
  "the photo of a {}",
  "a photo of a clean {}",
  "a photo of a dirty {}",
  "a dark photo of the {}",
  "a photo of my {}",
  "a photo of the cool {}",
  "a close-up photo of a {}",
  "a bright photo of the {}",
  "a cropped photo of a {}",
  "a photo of the {}",
  "a good photo of the {}",
  "a photo of one {}",
  "a close-up photo of the {}",
  "a rendition of the {}",
  "a photo of the clean {}",
  "a rendition of a {}",
  "a photo of a nice {}",
  "a good photo of a {}",
  "a photo of the nice {}",
  "a photo of the small {}",
  "a photo of the weird {}",
  "a photo of the large {}",
  "a photo of a cool {}",
  "a photo of a small {}",
)

# Template categories of Sariyildiz et al., "Fake it till you make it" (arXiv:2212.08420, Sec. 3), as the
# paper lists them (Sec. 3.2): class name c; c with its hypernym h; the latter with "multiple" and
# "multiple different"; c with its WordNet definition d; c with h inside a Places365 background b. The
# exact punctuation ("c, h", "c, h inside b") follows Sariyildiz et al.'s notation.
SARIYILDIZ_TEMPLATES = (
  "{c}",
  "{c}, {h}",
  "multiple {c}, {h}",
  "multiple different {c}, {h}",
  "{c}, {d}",
  "{c}, {h} inside {b}",
)

# Prompt strategies by name, each registered by `@strategy(name)` where it is defined (here, or in any module
# imported before the strategy is used, e.g. a test's): a method config names one in `method.prompt_strategy`.
PROMPT_STRATEGIES: dict[str, Strategy] = {}


@dataclasses.dataclass(frozen=True)
class Strategy:
  """`fn(cls, image_index, seed, lemmas) -> prompt`, or with `placeholder` first when `takes_placeholder`;
  `needs`: the ClassInfo fields beyond the names it reads ('definition', 'hypernyms'), which datasets other
  than ImageNet may lack (`check_strategy`)."""

  fn: Callable[..., str]
  takes_placeholder: bool = False
  needs: tuple[str, ...] = ()


def strategy(
  name: str, *, takes_placeholder: bool = False, needs: tuple[str, ...] = ()
) -> Callable[[Callable[..., str]], Callable[..., str]]:
  """Registers a prompt strategy under `name` (a decorator); a name registered twice is refused."""

  def register(fn: Callable[..., str]) -> Callable[..., str]:
    if name in PROMPT_STRATEGIES:
      raise ValueError(
        f"prompt strategy {name!r} is registered twice ({PROMPT_STRATEGIES[name].fn.__qualname__}, {fn.__qualname__})"
      )
    PROMPT_STRATEGIES[name] = Strategy(fn, takes_placeholder, needs)
    return fn

  return register


def _rng(seed: int, cls: ClassInfo, image_index: int) -> np.random.Generator:
  return np.random.default_rng([seed, cls.index, image_index])


# Which lemmas make the class name n (paper Sec. 3.2: "If a synset consists of multiple lemmas, we separate
# them by a comma ... as we found that providing multiple lemmas led to better performance than using only
# the first lemma of a synset"): "all" is the paper's choice, "first" its ablation.
LEMMA_CHOICES = ("all", "first")


def class_name(cls: ClassInfo, lemmas: str = "all") -> str:
  """n: all lemmas joined by ', ' ('tiger shark, Galeocerdo cuvieri'), or only the first ('tiger shark'); a
  dataset's extra prompt words (classes.json, jax_aug.data.classes) follow either."""
  if lemmas not in LEMMA_CHOICES:
    raise ValueError(f"unknown lemma choice {lemmas!r} for {cls.wnid}: expected one of {LEMMA_CHOICES}")
  return cls.name if lemmas == "all" else ", ".join((cls.lemmas[0],) + cls.extra_words)


def no_ws_name(cls: ClassInfo, lemmas: str = "all") -> str:
  """w(n): the class name with all white space removed ('desktop computer' -> 'desktopcomputer',
  'tiger shark, Galeocerdo cuvieri' -> 'tigershark,Galeocerdocuvieri')."""
  return "".join(class_name(cls, lemmas).split())


@strategy("simple")
def simple(cls: ClassInfo, image_index: int = 0, seed: int = 0, lemmas: str = "all") -> str:
  """Method 1: 'A photo of n.' with n = all lemmas joined by ', ' ('A photo of tiger shark, ...')."""
  del image_index, seed  # one prompt per class
  return f"A photo of {class_name(cls, lemmas)}."


@strategy("simple_no_ws")
def simple_no_ws(cls: ClassInfo, image_index: int = 0, seed: int = 0, lemmas: str = "all") -> str:
  """Method 2 (also the retrieval query): 'A photo of w(n).' with w removing white space."""
  del image_index, seed  # one prompt per class
  return f"A photo of {no_ws_name(cls, lemmas)}."


@strategy("clip_templates")
def clip_templates(cls: ClassInfo, image_index: int, seed: int, lemmas: str = "all") -> str:
  """Method 3: one of CLIP's 80 ImageNet templates filled with w(n), drawn with replacement (Sec. 3.1: "a
  photo of many w(n)", "a black and white photo of the w(n)"; the Figure 5 caption says the same)."""
  template = CLIP_IMAGENET_TEMPLATES[_rng(seed, cls, image_index).integers(len(CLIP_IMAGENET_TEMPLATES))]
  return template.format(no_ws_name(cls, lemmas))


def sariyildiz_category(image_index: int) -> int:
  """The template category of image `image_index`: round robin, so every category gets the same count
  (up to one) in every class, as the paper samples "for each category the same number of images"."""
  return image_index % len(SARIYILDIZ_TEMPLATES)


@strategy("sariyildiz", needs=("definition", "hypernyms"))
def sariyildiz(cls: ClassInfo, image_index: int, seed: int, lemmas: str = "all") -> str:
  """Method 4: Sariyildiz et al.'s template categories with a random Places365 background (c = all lemmas,
  as Sariyildiz et al.'s class name; `lemmas` does not apply)."""
  del lemmas
  scenes = places365_categories()
  background = scenes[_rng(seed, cls, image_index).integers(len(scenes))]
  return SARIYILDIZ_TEMPLATES[sariyildiz_category(image_index)].format(
    c=cls.name, h=cls.hypernyms[0], d=cls.definition, b=background
  )


@strategy("textual_inversion", takes_placeholder=True)
def textual_inversion(placeholder: str, cls: ClassInfo, image_index: int, seed: int, lemmas: str = "all") -> str:
  """Methods 8-9: a textual-inversion template around the class's pseudo-word token (`lemmas` does not apply)."""
  del lemmas
  if not placeholder or not placeholder.strip():
    raise ValueError(f"textual_inversion needs a non-empty placeholder (pseudo-word) for {cls.wnid}")
  rng = _rng(seed, cls, image_index)
  return TEXTUAL_INVERSION_TEMPLATES[rng.integers(len(TEXTUAL_INVERSION_TEMPLATES))].format(placeholder)


def registered_strategy(strategy: str) -> Strategy:
  registered = PROMPT_STRATEGIES.get(strategy)
  if registered is None:
    raise ValueError(f"unknown prompt strategy {strategy!r}: expected one of {', '.join(PROMPT_STRATEGIES)}")
  return registered


def check_strategy(strategy: str, classes: DatasetClasses) -> None:
  """Refuses `strategy` on a dataset some class of which lacks a field the strategy reads (Sariyildiz's
  definition and hypernym on a folder dataset without them in classes.json), before anything runs."""
  require_fields(strategy, registered_strategy(strategy).needs, classes)


def build_prompt(
  strategy: str, cls: ClassInfo, image_index: int, seed: int, *, placeholder: str | None = None, lemmas: str = "all"
) -> str:
  """The prompt of image `image_index` of class `cls` under the registered `strategy` (PROMPT_STRATEGIES);
  `lemmas` ("all" | "first") makes the class name n of the simple and CLIP prompts."""
  if image_index < 0:
    raise ValueError(f"image index must be >= 0, got {image_index} for {cls.wnid}")
  registered = registered_strategy(strategy)
  if registered.takes_placeholder:
    return registered.fn(placeholder or "", cls, image_index, seed, lemmas)
  if placeholder is not None:
    raise ValueError(f"placeholder is only used by strategies that take one, not by {strategy!r}")
  return registered.fn(cls, image_index, seed, lemmas)
