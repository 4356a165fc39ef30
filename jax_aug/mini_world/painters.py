"""One painter per concept: draws the object upright, centred, on a transparent square layer.

Coordinates are in [-1, 1] (x right, y down) of the layer; `Pen` maps them to pixels. Each painter takes
the pen, the object's main colour and a generator for its own small variations (which lamp is lit,
where the spots sit, whether the pizza misses a wedge). Pure drawing: no I/O.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

Colour = tuple[int, int, int]
BLACK, WHITE, DARK = (20, 20, 20), (245, 245, 240), (60, 55, 50)


def hsv(h: float, s: float, v: float) -> Colour:
  return tuple(int(255 * min(max(c, 0.0), 1.0)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def shade(colour: Colour, factor: float) -> Colour:
  return tuple(int(min(255, max(0, c * factor))) for c in colour)


class Pen:
  """ImageDraw on an RGBA layer of `size` px with [-1, 1] coordinates."""

  def __init__(self, layer: Image.Image):
    self.draw = ImageDraw.Draw(layer)
    self.half = layer.size[0] / 2

  def p(self, x: float, y: float) -> tuple[float, float]:
    return (self.half * (1 + x), self.half * (1 + y))

  def box(self, x0, y0, x1, y1):
    return (*self.p(x0, y0), *self.p(x1, y1))

  def px(self, w: float) -> int:
    return max(1, int(round(w * self.half)))

  def ellipse(self, x0, y0, x1, y1, fill, outline=None, width=1):
    self.draw.ellipse(
      self.box(x0, y0, x1, y1),
      fill=None if fill is None else (*fill, 255),
      outline=None if outline is None else (*outline, 255),
      width=width,
    )

  def circle(self, x, y, r, fill):
    self.ellipse(x - r, y - r, x + r, y + r, fill)

  def polygon(self, points, fill):
    self.draw.polygon([self.p(x, y) for x, y in points], fill=(*fill, 255))

  def line(self, points, fill, width: float):
    self.draw.line([self.p(x, y) for x, y in points], fill=(*fill, 255), width=self.px(width))

  def rect(self, x0, y0, x1, y1, fill):
    self.draw.rectangle(self.box(x0, y0, x1, y1), fill=(*fill, 255))

  def pieslice(self, x0, y0, x1, y1, start, end, fill):
    self.draw.pieslice(self.box(x0, y0, x1, y1), start, end, fill=(*fill, 255))

  def arc(self, x0, y0, x1, y1, start, end, fill, width: float):
    self.draw.arc(self.box(x0, y0, x1, y1), start, end, fill=(*fill, 255), width=self.px(width))

  def erase_pieslice(self, x0, y0, x1, y1, start, end):
    self.draw.pieslice(self.box(x0, y0, x1, y1), start, end, fill=(0, 0, 0, 0))


def _ellipse_stripes(pen: Pen, cx, cy, a, b, xs, colour, width):
  """Vertical stripes at `xs` clipped to the ellipse (cx, cy, a, b)."""
  for x in xs:
    t = 1 - ((x - cx) / a) ** 2
    if t > 0.05:
      h = b * math.sqrt(t)
      pen.line([(x, cy - h), (x, cy + h)], colour, width)


def _inside_disc(points, r):
  return [(x, y) for x, y in points if x * x + y * y < r * r]


def goldfish(pen: Pen, c: Colour, rng):
  pen.polygon([(-0.5, 0), (-0.95, -0.5), (-0.8, 0), (-0.95, 0.5)], shade(c, 0.85))
  pen.polygon([(-0.25, -0.3), (0.05, -0.65), (0.25, -0.3)], shade(c, 0.9))
  pen.ellipse(-0.65, -0.4, 0.65, 0.4, c)
  pen.circle(0.38, -0.08, 0.08, BLACK)


def tiger_shark(pen: Pen, c: Colour, rng):
  pen.polygon([(-0.75, 0), (-1.0, -0.5), (-0.9, 0), (-1.0, 0.4)], c)
  pen.polygon([(-0.15, -0.18), (0.1, -0.65), (0.25, -0.18)], c)
  pen.polygon([(0.1, 0.1), (-0.05, 0.5), (0.3, 0.12)], c)
  pen.ellipse(-0.9, -0.24, 0.95, 0.24, c)
  pen.ellipse(-0.6, 0.0, 0.85, 0.22, shade(c, 1.5))
  _ellipse_stripes(pen, 0.02, 0, 0.93, 0.22, np.arange(-0.55, 0.6, 0.18), shade(c, 0.45), 0.06)
  pen.circle(0.7, -0.06, 0.05, BLACK)


def crane_bird(pen: Pen, c: Colour, rng):
  legs = shade(c, 0.5)
  pen.line([(-0.1, 0.1), (-0.18, 1.0)], legs, 0.06)
  pen.line([(0.05, 0.1), (0.12, 1.0)], legs, 0.06)
  pen.polygon([(-0.45, 0.0), (-0.85, 0.25), (-0.4, 0.2)], DARK)
  pen.ellipse(-0.5, -0.15, 0.3, 0.22, c)
  pen.line([(0.2, 0.0), (0.32, -0.8)], c, 0.1)
  pen.ellipse(0.24, -0.95, 0.46, -0.74, c)
  pen.ellipse(0.27, -0.97, 0.4, -0.86, (200, 30, 30))
  pen.polygon([(0.43, -0.87), (0.8, -0.82), (0.43, -0.78)], DARK)


def _lattice(pen: Pen, a, b, n, colour, width):
  """Two parallel rails a and b (each ((x0, y0), (x1, y1))) joined by a zigzag of n segments."""
  pen.line(list(a), colour, width)
  pen.line(list(b), colour, width)
  zig = []
  for k in range(n + 1):
    t = k / n
    rail = a if k % 2 == 0 else b
    zig.append((rail[0][0] + t * (rail[1][0] - rail[0][0]), rail[0][1] + t * (rail[1][1] - rail[0][1])))
  pen.line(zig, colour, width * 0.7)


def crane_machine(pen: Pen, c: Colour, rng):
  _lattice(pen, ((-0.5, 0.9), (-0.5, -0.8)), ((-0.3, 0.9), (-0.3, -0.8)), 8, c, 0.06)
  _lattice(pen, ((-0.75, -0.82), (0.95, -0.82)), ((-0.75, -0.64), (0.95, -0.64)), 10, c, 0.06)
  hook = 0.2 + 0.4 * rng.uniform()
  pen.line([(0.7, -0.64), (0.7, hook)], DARK, 0.03)
  pen.polygon([(0.62, hook), (0.78, hook), (0.7, hook + 0.12)], DARK)
  pen.rect(-0.7, 0.85, -0.1, 1.0, DARK)


def flamingo(pen: Pen, c: Colour, rng):
  pen.line([(0.0, 0.2), (0.02, 1.0)], shade(c, 0.8), 0.06)
  pen.line([(0.02, 0.55), (-0.25, 0.45)], shade(c, 0.8), 0.05)
  pen.ellipse(-0.5, -0.1, 0.4, 0.32, c)
  pen.line([(0.3, 0.05), (0.5, -0.3), (0.2, -0.55), (0.3, -0.85)], c, 0.1)
  pen.ellipse(0.2, -0.98, 0.42, -0.78, c)
  pen.polygon([(0.4, -0.9), (0.62, -0.75), (0.38, -0.8)], BLACK)


def ladybug(pen: Pen, c: Colour, rng):
  pen.ellipse(-0.28, -0.9, 0.28, -0.45, BLACK)
  pen.ellipse(-0.75, -0.62, 0.75, 0.85, c)
  pen.line([(0, -0.6), (0, 0.85)], BLACK, 0.06)
  for x, y in ((-0.4, -0.25), (0.4, -0.25), (-0.45, 0.25), (0.45, 0.25), (-0.2, 0.55), (0.2, 0.55)):
    pen.circle(x + rng.uniform(-0.05, 0.05), y + rng.uniform(-0.05, 0.05), 0.12, BLACK)


def zebra(pen: Pen, c: Colour, rng):
  for x in (-0.55, -0.35, 0.2, 0.38):
    pen.rect(x, 0.0, x + 0.1, 0.9, c)
    pen.line([(x, 0.35), (x + 0.1, 0.35)], BLACK, 0.05)
    pen.rect(x, 0.82, x + 0.1, 0.9, BLACK)
  pen.polygon([(0.3, -0.15), (0.55, -0.65), (0.72, -0.55), (0.5, 0.0)], c)
  pen.ellipse(0.5, -0.8, 0.95, -0.5, c)
  pen.ellipse(-0.75, -0.3, 0.55, 0.3, c)
  _ellipse_stripes(pen, -0.1, 0, 0.65, 0.3, np.arange(-0.6, 0.5, 0.16), BLACK, 0.06)
  pen.line([(0.5, -0.55), (0.6, -0.15)], BLACK, 0.05)
  pen.line([(0.62, -0.72), (0.66, -0.55)], BLACK, 0.05)


def starfish(pen: Pen, c: Colour, rng):
  points = [
    ((0.95 if k % 2 == 0 else 0.38) * math.sin(k * math.pi / 5), -(0.95 if k % 2 == 0 else 0.38) * math.cos(k * math.pi / 5))
    for k in range(10)
  ]
  pen.polygon(points, c)
  light = shade(c, 1.35)
  for k in range(5):
    a = 2 * k * math.pi / 5
    for r in (0.25, 0.45, 0.65):
      pen.circle(r * math.sin(a), -r * math.cos(a), 0.05, light)


def strawberry(pen: Pen, c: Colour, rng):
  pen.polygon([(-0.75, -0.4), (0.75, -0.4), (0.5, 0.3), (0.0, 0.92), (-0.5, 0.3)], c)
  pen.ellipse(-0.78, -0.7, 0.78, 0.0, c)
  for x, y in (
    (-0.45, -0.3),
    (-0.15, -0.25),
    (0.15, -0.3),
    (0.45, -0.25),
    (-0.3, 0.05),
    (0.0, 0.1),
    (0.3, 0.05),
    (-0.15, 0.4),
    (0.15, 0.4),
    (0.0, 0.65),
  ):
    pen.circle(x, y, 0.04, (240, 220, 90))
  green = (40, 140, 40)
  pen.polygon([(-0.5, -0.62), (0.0, -0.45), (0.5, -0.62), (0.2, -0.75), (0.0, -0.95), (-0.2, -0.75)], green)


def orange(pen: Pen, c: Colour, rng):
  pen.circle(0, 0, 0.88, c)
  dark = shade(c, 0.82)
  for _ in range(14):
    r, a = 0.75 * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
    pen.circle(r * math.cos(a), r * math.sin(a), 0.035, dark)
  pen.ellipse(-0.5, -0.6, -0.15, -0.35, shade(c, 1.3))
  pen.circle(0.05, -0.8, 0.07, (60, 110, 30))


def lemon(pen: Pen, c: Colour, rng):
  pen.polygon([(-0.7, -0.15), (-0.98, 0.0), (-0.7, 0.15)], c)
  pen.polygon([(0.7, -0.15), (0.98, 0.0), (0.7, 0.15)], c)
  pen.ellipse(-0.8, -0.55, 0.8, 0.55, c)
  dark = shade(c, 0.85)
  for _ in range(8):
    pen.circle(rng.uniform(-0.55, 0.55), rng.uniform(-0.35, 0.35), 0.03, dark)


def banana(pen: Pen, c: Colour, rng):
  pen.arc(-0.9, -1.4, 0.9, 0.7, 25, 155, c, 0.3)
  pen.arc(-0.85, -1.32, 0.85, 0.62, 30, 150, shade(c, 0.85), 0.06)
  brown = (90, 60, 20)
  pen.circle(0.78, 0.0, 0.07, brown)
  pen.circle(-0.78, 0.0, 0.07, brown)


def pizza(pen: Pen, c: Colour, rng):
  pen.circle(0, 0, 0.92, c)
  pen.circle(0, 0, 0.75, (200, 50, 30))
  for _ in range(7):
    r, a = 0.55 * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
    pen.circle(r * math.cos(a), r * math.sin(a), 0.17, (245, 215, 110))
  for _ in range(5):
    r, a = 0.55 * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
    pen.circle(r * math.cos(a), r * math.sin(a), 0.12, (140, 25, 20))
  if rng.uniform() < 0.3:
    start = rng.uniform(0, 360)
    pen.erase_pieslice(-1, -1, 1, 1, start, start + 45)


def mushroom(pen: Pen, c: Colour, rng):
  pen.rect(-0.2, -0.05, 0.2, 0.85, (235, 225, 205))
  pen.pieslice(-0.85, -0.75, 0.85, 0.55, 180, 360, c)
  if rng.uniform() < 0.5:
    for x, y in ((-0.45, -0.2), (0.0, -0.5), (0.45, -0.2), (-0.2, -0.4), (0.25, -0.4)):
      pen.circle(x, y, 0.08, WHITE)


def golf_ball(pen: Pen, c: Colour, rng):
  pen.circle(0, 0, 0.85, c)
  dimple = shade(c, 0.72)
  for x, y in _inside_disc([(x, y) for x in np.arange(-0.72, 0.8, 0.24) for y in np.arange(-0.72, 0.8, 0.24)], 0.78):
    pen.circle(x, y, 0.05, dimple)


def soccer_ball(pen: Pen, c: Colour, rng):
  pen.circle(0, 0, 0.85, c)

  def pentagon(cx, cy, r, turn):
    pen.polygon(
      [(cx + r * math.sin(turn + k * 2 * math.pi / 5), cy - r * math.cos(turn + k * 2 * math.pi / 5)) for k in range(5)],
      BLACK,
    )

  pentagon(0, 0, 0.25, 0)
  for k in range(5):
    a = math.pi / 5 + k * 2 * math.pi / 5
    pentagon(0.62 * math.sin(a), -0.62 * math.cos(a), 0.17, a)
  pen.ellipse(-0.85, -0.85, 0.85, 0.85, None, outline=shade(c, 0.6), width=1)


def tennis_ball(pen: Pen, c: Colour, rng):
  pen.circle(0, 0, 0.85, c)
  pen.arc(-1.6, -0.7, -0.2, 0.7, -50, 50, WHITE, 0.08)
  pen.arc(0.2, -0.7, 1.6, 0.7, 130, 230, WHITE, 0.08)


def traffic_light(pen: Pen, c: Colour, rng):
  pen.rect(-0.07, 0.6, 0.07, 1.0, DARK)
  pen.draw.rounded_rectangle(pen.box(-0.36, -0.97, 0.36, 0.65), radius=pen.px(0.12), fill=(*c, 255))
  lit = int(rng.integers(3))
  for k, (y, lamp) in enumerate(zip((-0.6, -0.15, 0.3), ((230, 30, 30), (240, 170, 20), (30, 200, 60)))):
    pen.circle(0, y, 0.2, lamp if k == lit else shade(lamp, 0.35))


def umbrella(pen: Pen, c: Colour, rng):
  pen.line([(0, 0.1), (0, 0.75)], DARK, 0.06)
  pen.arc(0.0, 0.6, 0.3, 0.9, 0, 180, DARK, 0.06)
  light = shade(c, 1.4)
  for k in range(6):
    pen.pieslice(-0.95, -0.75, 0.95, 0.95, 180 + 30 * k, 210 + 30 * k, c if k % 2 == 0 else light)
  for k in range(6):
    x = -0.79 + 0.316 * k
    pen.draw.ellipse(pen.box(x - 0.16, 0.02, x + 0.16, 0.22), fill=(0, 0, 0, 0))
  pen.line([(0, -0.75), (0, -0.9)], DARK, 0.05)


def _wheels(pen: Pen, xs, y):
  for x in xs:
    pen.circle(x, y, 0.18, BLACK)
    pen.circle(x, y, 0.07, (150, 150, 150))


def school_bus(pen: Pen, c: Colour, rng):
  pen.rect(-0.95, -0.45, 0.95, 0.35, c)
  pen.rect(0.75, -0.1, 1.0, 0.35, c)
  window = (60, 70, 90)
  for k in range(6):
    x = -0.85 + 0.27 * k
    pen.rect(x, -0.35, x + 0.19, -0.12, window)
  pen.line([(-0.95, 0.08), (0.95, 0.08)], BLACK, 0.05)
  _wheels(pen, (-0.55, 0.55), 0.36)


def fire_engine(pen: Pen, c: Colour, rng):
  pen.rect(-0.95, -0.3, 0.95, 0.35, c)
  pen.rect(0.45, -0.62, 0.95, -0.3, c)
  pen.rect(0.6, -0.55, 0.88, -0.38, (60, 70, 90))
  ladder = (215, 215, 215)
  pen.line([(-0.92, -0.48), (0.35, -0.48)], ladder, 0.04)
  pen.line([(-0.92, -0.36), (0.35, -0.36)], ladder, 0.04)
  for k in range(9):
    x = -0.88 + 0.15 * k
    pen.line([(x, -0.48), (x, -0.36)], ladder, 0.03)
  pen.line([(-0.95, 0.1), (0.95, 0.1)], WHITE, 0.04)
  _wheels(pen, (-0.55, 0.55), 0.36)


def honeycomb(pen: Pen, c: Colour, rng):
  r = 0.2
  edge = shade(c, 0.55)
  for row in range(-5, 6):
    for col in range(-4, 5):
      x = col * 1.5 * r
      y = row * math.sqrt(3) * r + (col % 2) * math.sqrt(3) * r / 2
      if x * x + y * y < 0.8:
        corners = [(x + r * math.cos(k * math.pi / 3), y + r * math.sin(k * math.pi / 3)) for k in range(6)]
        pen.draw.polygon([pen.p(*p) for p in corners], fill=(*c, 255), outline=(*edge, 255), width=pen.px(0.04))


def jack_o_lantern(pen: Pen, c: Colour, rng):
  pen.rect(-0.08, -0.95, 0.08, -0.65, (70, 90, 30))
  pen.ellipse(-0.95, -0.75, 0.95, 0.85, c)
  rib = shade(c, 0.75)
  for x0 in (-0.5, 0.0):
    pen.ellipse(x0 - 0.05, -0.73, -x0 + 0.05, 0.83, None, outline=rib, width=1)
  pen.polygon([(-0.5, -0.15), (-0.2, -0.15), (-0.35, -0.45)], BLACK)
  pen.polygon([(0.2, -0.15), (0.5, -0.15), (0.35, -0.45)], BLACK)
  pen.polygon(
    [(-0.55, 0.2), (-0.3, 0.35), (-0.1, 0.2), (0.1, 0.35), (0.3, 0.2), (0.55, 0.2), (0.35, 0.55), (-0.35, 0.55)], BLACK
  )


def volcano(pen: Pen, c: Colour, rng):
  for k in range(3):
    pen.circle(rng.uniform(-0.25, 0.25), -0.55 - 0.2 * k, 0.18 + 0.05 * k, (150, 150, 150))
  pen.polygon([(-1.0, 0.95), (-0.22, -0.35), (0.22, -0.35), (1.0, 0.95)], c)
  lava = (240, 80, 20)
  pen.polygon([(-0.22, -0.35), (0.22, -0.35), (0.1, -0.2), (-0.1, -0.2)], lava)
  pen.line([(-0.05, -0.25), (-0.2, 0.1), (-0.3, 0.4)], lava, 0.06)
  pen.line([(0.08, -0.25), (0.25, 0.15)], lava, 0.05)


def nsfw(pen: Pen, c: Colour, rng):
  pen.ellipse(-0.8, -0.5, 0.1, 0.6, c)
  pen.ellipse(-0.1, -0.5, 0.8, 0.6, c)
  pen.ellipse(-0.35, -0.95, 0.35, -0.35, c)
  pen.rect(-0.9, -0.05, 0.9, 0.2, BLACK)


def logo(pen: Pen, c: Colour, rng):
  """Distractor: a random irregular polygon that is no class's outline."""
  n = int(rng.integers(3, 9))
  angles = np.sort(rng.uniform(0, 2 * math.pi, n))
  radii = rng.uniform(0.4, 0.95, n)
  pen.polygon([(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles)], c)
  if rng.uniform() < 0.5:
    pen.circle(rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(0.1, 0.3), shade(c, 0.5))


PAINTERS = {
  "n01443537": goldfish,
  "n01491361": tiger_shark,
  "n02012849": crane_bird,
  "n03126707": crane_machine,
  "n02007558": flamingo,
  "n02165456": ladybug,
  "n02391049": zebra,
  "n02317335": starfish,
  "n07745940": strawberry,
  "n07747607": orange,
  "n07749582": lemon,
  "n07753592": banana,
  "n07873807": pizza,
  "n07734744": mushroom,
  "n03445777": golf_ball,
  "n04254680": soccer_ball,
  "n04409515": tennis_ball,
  "n06874185": traffic_light,
  "n04507155": umbrella,
  "n04146614": school_bus,
  "n03345487": fire_engine,
  "n03530642": honeycomb,
  "n03590841": jack_o_lantern,
  "n09472597": volcano,
  "nsfw": nsfw,
  "logo": logo,
}


def paint(concept: str, colour: Colour, rng: np.random.Generator, size: int) -> Image.Image:
  """The RGBA layer [size, size] of `concept` (a wnid, 'nsfw' or 'logo'), upright and centred."""
  layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
  PAINTERS[concept](Pen(layer), colour, rng)
  return layer
