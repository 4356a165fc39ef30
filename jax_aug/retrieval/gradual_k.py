"""The paper's gradual-k schedule: how many nearest neighbours to ask for, step by step.

"it is often necessary to retrieve more than the desired number of images, which we do by increasing the
number of nearest neighbors gradually from 1.4 * 130 to 6 * 1.4 * 130 when not enough samples were found"
(Burg et al., 2023, Sec. 3.2). The paper does not give the step; ours is one multiple of the first k per
step (1x, 2x, ... 6x 1.4 * 130 = 182, 364, ..., 1092), documented in docs/retrieval.md.
"""

from __future__ import annotations

import math


def k_schedule(images_per_class: int, k_factor: float = 1.4, max_multiple: int = 6) -> list[int]:
  """The k of every step: round(m * k_factor * images_per_class) for m = 1 .. max_multiple.

  Rounded to the nearest integer with a tolerance, because 1.4 * 130 is 182.00000000000003 in floating
  point and must give 182, not 183.
  """
  if not isinstance(images_per_class, int) or images_per_class < 1:
    raise ValueError(f"images_per_class must be an integer >= 1, got {images_per_class!r}")
  if not k_factor >= 1.0:
    raise ValueError(f"k_factor must be >= 1 (ask for at least as many neighbours as images kept), got {k_factor!r}")
  if not isinstance(max_multiple, int) or max_multiple < 1:
    raise ValueError(f"max_multiple must be an integer >= 1, got {max_multiple!r}")
  base = k_factor * images_per_class
  return [max(images_per_class, math.floor(m * base + 0.5 - 1e-9)) for m in range(1, max_multiple + 1)]
