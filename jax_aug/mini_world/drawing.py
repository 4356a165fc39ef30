"""Scenes of the mini world: a background, objects posed on it, a rendering style, a camera.

Two domains draw from the same painters (jax_aug/mini_world/painters.py) with different parameter
distributions (docs/mini_world.md): the web corpus (wide: any style, background, scale, pose, colour) and
the target dataset (narrow and shifted: photos in a studio, warm light, camera noise). Scenes are drawn at
twice the output size and reduced (anti-aliasing); everything comes from the item's own generator.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from jax_aug.mini_world import concepts
from jax_aug.mini_world.painters import hsv, paint

SUPERSAMPLE = 2
STYLES = ("photo", "cartoon", "sketch", "painting", "bw")
STYLE_P = (0.5, 0.2, 0.1, 0.1, 0.1)
BACKGROUNDS = ("plain", "gradient", "texture", "scene", "clutter")
BACKGROUND_P = (0.2, 0.2, 0.2, 0.25, 0.15)
SCENE_GROUNDS = {"grass": (0.3, 0.6, 0.55), "sand": (0.11, 0.35, 0.85), "water": (0.58, 0.6, 0.7), "road": (0.0, 0.0, 0.4)}
UNUSUAL_COLOUR_P = 0.05
MULTI_INSTANCE_P = 0.12


@dataclasses.dataclass(frozen=True)
class Scene:
  """What was drawn (the ground truth the captions and metadata are made from)."""

  concept: str
  style: str
  background: str
  scale: float
  colour: tuple[int, int, int]
  unusual_colour: bool
  instances: int
  jpeg_quality: int


def _hsv_image(h, s, v, shape) -> np.ndarray:
  return np.broadcast_to(np.asarray(hsv(h, s, v), np.float32), (*shape, 3)).copy()


def _corpus_background(kind: str, rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
  """[n, n, 3] float32 pixels and a word for captions (the ground colour, the texture, ...)."""
  yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
  h, s, v = rng.uniform(), rng.uniform(0.05, 0.6), rng.uniform(0.35, 0.95)
  if kind == "plain":
    return _hsv_image(h, s, v, (n, n)), "plain"
  if kind == "gradient":
    top, bottom = np.asarray(hsv(h, s, v), np.float32), np.asarray(hsv(rng.uniform(), s, v * 0.7), np.float32)
    return top + (bottom - top) * yy[..., None], "gradient"
  if kind == "texture":
    base = _hsv_image(h, s, v, (n, n))
    pattern = ("stripes", "checks", "noise")[int(rng.integers(3))]
    period = rng.uniform(0.08, 0.2)
    if pattern == "stripes":
      angle = rng.uniform(0, np.pi)
      mask = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / period) > 0
    elif pattern == "checks":
      mask = ((xx // period) + (yy // period)) % 2 == 1
    else:
      mask = rng.uniform(size=(n, n)) < 0.5
    return base * (0.75 + 0.25 * mask[..., None]), pattern
  if kind == "scene":
    ground = list(SCENE_GROUNDS)[int(rng.integers(len(SCENE_GROUNDS)))]
    gh, gs, gv = SCENE_GROUNDS[ground]
    horizon = rng.uniform(0.35, 0.75)
    sky = np.asarray(hsv(0.58 + rng.uniform(-0.04, 0.04), rng.uniform(0.2, 0.6), rng.uniform(0.7, 1.0)), np.float32)
    floor = np.asarray(hsv(gh + rng.uniform(-0.03, 0.03), gs, gv * rng.uniform(0.8, 1.1)), np.float32)
    pixels = np.where((yy < horizon)[..., None], sky * (0.85 + 0.15 * yy[..., None]), floor)
    return pixels.astype(np.float32), ground
  # clutter: small random shapes over a plain background
  pixels = Image.fromarray(_hsv_image(h, s, v, (n, n)).astype(np.uint8))
  draw = ImageDraw.Draw(pixels)
  for _ in range(int(rng.integers(6, 14))):
    x, y, r = rng.uniform(0, n), rng.uniform(0, n), rng.uniform(0.03, 0.1) * n
    fill = hsv(rng.uniform(), rng.uniform(0.3, 1), rng.uniform(0.3, 1))
    if rng.uniform() < 0.5:
      draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    else:
      draw.rectangle((x - r, y - r, x + r, y + r * rng.uniform(0.3, 1.5)), fill=fill)
  return np.asarray(pixels, np.float32), "clutter"


def _studio_background(rng: np.random.Generator, n: int) -> np.ndarray:
  """The target domain's only background family: a muted warm wall over a darker floor, softly lit."""
  yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
  hue = rng.uniform(0.05, 0.12)
  wall = np.asarray(hsv(hue, rng.uniform(0.05, 0.25), rng.uniform(0.6, 0.85)), np.float32)
  floor = np.asarray(hsv(hue, rng.uniform(0.15, 0.35), rng.uniform(0.35, 0.55)), np.float32)
  split = rng.uniform(0.6, 0.8)
  pixels = np.where((yy < split)[..., None], wall, floor)
  vignette = 1.0 - 0.25 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
  return pixels * vignette[..., None]


def _object_colour(concept: str, rng: np.random.Generator, hue_jitter: float, unusual_p: float):
  if concept in concepts.CONCEPT_BY_WNID:
    c = concepts.CONCEPT_BY_WNID[concept]
    h, s, v = c.hue, c.saturation, c.value
  elif concept == concepts.NSFW:
    h, s, v = 0.06, 0.35, 0.95
  else:
    h, s, v = rng.uniform(), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)
  unusual = rng.uniform() < unusual_p
  if unusual:
    h = rng.uniform()
    s = max(s, 0.6)
  h += rng.uniform(-hue_jitter, hue_jitter)
  if hue_jitter > 0.03:  # the corpus: wide saturation/value spread
    s, v = s * rng.uniform(0.6, 1.2), v * rng.uniform(0.6, 1.15)
  else:
    s, v = s * rng.uniform(0.85, 1.05), v * rng.uniform(0.85, 1.05)
  return hsv(h, min(s, 1.0), min(v, 1.0)), unusual


def _place(
  canvas: Image.Image, layer: Image.Image, *, scale: float, cx: float, cy: float, angle: float, flip: bool
) -> np.ndarray:
  """Pastes the object layer posed onto `canvas` in place; returns its alpha mask on the canvas [n, n]."""
  n = canvas.size[0]
  if flip:
    layer = ImageOps.mirror(layer)
  if angle:
    layer = layer.rotate(angle, resample=Image.Resampling.BILINEAR)
  side = max(2, int(round(scale * n)))
  layer = layer.resize((side, side), Image.Resampling.BILINEAR)
  x, y = int(round(cx * n - side / 2)), int(round(cy * n - side / 2))
  mask = Image.new("L", (n, n), 0)
  alpha = layer.getchannel("A")
  mask.paste(alpha, (x, y))
  canvas.paste(layer.convert("RGB"), (x, y), alpha)
  return np.asarray(mask, np.float32) / 255.0


def _stylise(pixels: np.ndarray, mask: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
  """Applies the rendering style to the composed scene [n, n, 3] (float 0..255) with object mask."""
  n = pixels.shape[0]
  if style in ("photo", "bw"):
    yy = np.linspace(1.15, 0.8, n, dtype=np.float32)[:, None, None]
    grain = rng.normal(1.0, 0.06, (n, n, 1)).astype(np.float32)
    pixels = pixels * (1 - mask[..., None]) + pixels * yy * grain * mask[..., None]
    if style == "bw":
      pixels = np.repeat(pixels @ np.asarray([[0.299], [0.587], [0.114]], np.float32), 3, axis=2)
    return pixels
  image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
  if style == "cartoon":
    edge = (
      np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(3)), np.float32) / 255.0 - mask
    )
    return pixels * (1 - edge[..., None]) + 20.0 * edge[..., None]
  if style == "sketch":
    edges = np.asarray(ImageOps.grayscale(image).filter(ImageFilter.FIND_EDGES), np.float32)
    paper = np.asarray(hsv(0.12, rng.uniform(0.0, 0.15), rng.uniform(0.88, 1.0)), np.float32)
    ink = np.clip(edges * 3.0, 0, 255)[..., None] / 255.0
    return paper * (1 - ink) + 30.0 * ink
  # painting: soft and posterised
  image = ImageOps.posterize(image.filter(ImageFilter.GaussianBlur(1.2)), 3)
  return np.asarray(image, np.float32)


def _finish(pixels: np.ndarray, noise_sigma: float, rng: np.random.Generator, out: int, blur: float = 0.0) -> Image.Image:
  image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
  image = image.reduce(image.size[0] // out)
  if blur:
    image = image.filter(ImageFilter.GaussianBlur(blur))
  pixels = np.asarray(image, np.float32) + rng.normal(0, noise_sigma, (out, out, 3))
  return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def draw_corpus_image(
  concept: str, rng: np.random.Generator, size: int = concepts.IMAGE_SIZE
) -> tuple[Image.Image, Scene, str]:
  """A web image of `concept` (a wnid, NSFW or DISTRACTOR): (image, scene, background word)."""
  n = size * SUPERSAMPLE
  style = STYLES[rng.choice(len(STYLES), p=STYLE_P)]
  family = None
  if concept == concepts.DISTRACTOR:
    family = concepts.DISTRACTOR_FAMILIES[int(rng.integers(len(concepts.DISTRACTOR_FAMILIES)))]
    background = {"texture": "texture", "landscape": "scene"}.get(
      family, "plain" if family == "document" else BACKGROUNDS[rng.choice(5, p=BACKGROUND_P)]
    )
  else:
    background = BACKGROUNDS[rng.choice(len(BACKGROUNDS), p=BACKGROUND_P)]
  pixels, word = _corpus_background(background, rng, n)
  if family == "document":
    pixels[:] = np.asarray(hsv(0.1, 0.03, rng.uniform(0.85, 1.0)), np.float32)
    for row in np.arange(rng.uniform(0.08, 0.15), 0.9, rng.uniform(0.08, 0.14)):
      length = rng.uniform(0.4, 0.9)
      pixels[int(row * n) : int(row * n) + 2, int(0.08 * n) : int((0.08 + length) * n)] = rng.uniform(20, 90)
  canvas = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
  mask = np.zeros((n, n), np.float32)
  colour, unusual, scale, instances = (0, 0, 0), False, 0.0, 0
  if family in (None, "logo"):
    painter = "logo" if family == "logo" else concept
    symmetric = painter in concepts.CONCEPT_BY_WNID and concepts.CONCEPT_BY_WNID[painter].rotation_symmetric
    instances = int(rng.integers(2, 4)) if rng.uniform() < MULTI_INSTANCE_P else 1
    colour, unusual = _object_colour(
      painter if painter != "logo" else concepts.DISTRACTOR,
      rng,
      0.05,
      UNUSUAL_COLOUR_P if painter in concepts.CONCEPT_BY_WNID else 0.0,
    )
    for _ in range(instances):
      scale = rng.uniform(0.35, 0.95) / (1.0 if instances == 1 else 1.6)
      # up to a quarter of the object may fall outside the frame
      low, high = 0.5 * scale - 0.25 * scale, 1 - 0.5 * scale + 0.25 * scale
      cx, cy = rng.uniform(min(low, 0.5), max(high, 0.5), 2)
      angle = rng.uniform(-180, 180) if symmetric else rng.uniform(-35, 35)
      layer = paint(painter, colour, rng, n)
      mask = np.maximum(mask, _place(canvas, layer, scale=scale, cx=cx, cy=cy, angle=angle, flip=bool(rng.uniform() < 0.5)))
  pixels = _stylise(np.asarray(canvas, np.float32), mask, style, rng)
  quality = int(rng.integers(60, 96))
  image = _finish(pixels, rng.uniform(2, 10) if style in ("photo", "bw") else rng.uniform(0, 3), rng, size)
  scene = Scene(
    concept=concept if family is None else f"{concept}:{family}",
    style=style,
    background=background,
    scale=float(scale),
    colour=colour,
    unusual_colour=bool(unusual),
    instances=instances,
    jpeg_quality=quality,
  )
  return image, scene, word


def draw_target_image(wnid: str, rng: np.random.Generator, size: int = concepts.IMAGE_SIZE) -> tuple[Image.Image, int]:
  """An ImageNet-like photo of class `wnid` in the target domain: (image, JPEG quality)."""
  n = size * SUPERSAMPLE
  concept = concepts.CONCEPT_BY_WNID[wnid]
  canvas = Image.fromarray(_studio_background(rng, n).clip(0, 255).astype(np.uint8))
  colour, _ = _object_colour(wnid, rng, 0.03, 0.0)
  scale = rng.uniform(0.45, 0.8)
  cx, cy = 0.5 + rng.uniform(-0.15, 0.15, 2)
  angle = rng.uniform(-180, 180) if concept.rotation_symmetric else rng.uniform(-20, 20)
  mask = _place(canvas, paint(wnid, colour, rng, n), scale=scale, cx=cx, cy=cy, angle=angle, flip=bool(rng.uniform() < 0.5))
  pixels = _stylise(np.asarray(canvas, np.float32), mask, "photo", rng)
  # warm light, dimmer, gamma
  pixels = pixels * np.asarray([1.08, 1.0, 0.86], np.float32) * rng.uniform(0.7, 0.95)
  pixels = 255.0 * (pixels.clip(0, 255) / 255.0) ** 1.2
  image = _finish(pixels, rng.uniform(5, 10), rng, size, blur=rng.uniform(0.4, 0.7))
  return image, int(rng.integers(70, 91))


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()
