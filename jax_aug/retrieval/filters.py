"""The paper's filters on retrieved candidates, as pure functions of scores, flags and embeddings.

Each filter returns, per candidate, None (kept) or a short reason (dropped), so the pipeline can count
and log why candidates were lost. I/O (reading metadata, downloading, running the safety checker) lives
elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# clip-retrieval's `clip back` default for its duplicate detector (`get_non_uniques(..., threshold=0.94)`).
DEFAULT_DEDUP_THRESHOLD = 0.94
# "Images with a Laion aesthetics score of less than 5 were discarded" (Burg et al., 2023, Sec. 3.2).
DEFAULT_MIN_AESTHETIC = 5.0


def duplicate_reasons(embeddings: np.ndarray, threshold: float = DEFAULT_DEDUP_THRESHOLD) -> list[str | None]:
  """clip-retrieval's duplicate detector on rank-ordered, L2-normalized embeddings [N, D].

  Two candidates are linked when their cosine similarity exceeds `threshold`; in every connected
  component of that graph the best-ranked candidate (lowest index) is kept and the others are dropped.
  Linking is transitive (A~B and B~C drops B and C even when A and C are far apart), as in clip-retrieval.
  """
  embeddings = np.asarray(embeddings, np.float32)
  if embeddings.ndim != 2:
    raise ValueError(f"embeddings must be [N, D], got shape {list(embeddings.shape)}")
  if not -1.0 <= threshold <= 1.0:
    raise ValueError(f"dedup threshold is a cosine similarity in [-1, 1], got {threshold}")
  norms = np.linalg.norm(embeddings, axis=1)
  if embeddings.shape[0] and not np.allclose(norms, 1.0, atol=1e-3):
    raise ValueError(f"embeddings must be L2-normalized, got norms in [{norms.min():.4f}, {norms.max():.4f}]")
  linked = embeddings @ embeddings.T > threshold
  component = np.full(embeddings.shape[0], -1)
  for start in range(embeddings.shape[0]):
    if component[start] >= 0:
      continue
    component[start] = start
    frontier = [start]
    while frontier:
      node = frontier.pop()
      for other in np.flatnonzero(linked[node] & (component < 0)):
        component[other] = start
        frontier.append(int(other))
  return [None if component[i] == i else f"near-duplicate of rank {component[i]}" for i in range(embeddings.shape[0])]


def aesthetic_reasons(scores: Sequence[float | None], min_score: float = DEFAULT_MIN_AESTHETIC) -> list[str | None]:
  """Drops scores below `min_score`; a missing (None/NaN) score is dropped too: it cannot be shown to pass."""
  reasons = []
  for score in scores:
    if score is None or not np.isfinite(score):
      reasons.append("no aesthetic score")
    elif score < min_score:
      reasons.append(f"aesthetic score {score:.3f} < {min_score}")
    else:
      reasons.append(None)
  return reasons


def nsfw_flag_reasons(flags: Sequence[str | None], unsafe_values: Sequence[str] = ("NSFW",)) -> list[str | None]:
  """LAION's metadata NSFW column holds 'UNLIKELY' / 'UNSURE' / 'NSFW'; drops the values listed unsafe."""
  unsafe = {v.upper() for v in unsafe_values}
  return [f"metadata NSFW flag {flag!r}" if flag is not None and str(flag).upper() in unsafe else None for flag in flags]


def shorter_side_reasons(sizes: Sequence[tuple[int, int]], min_side: int | None) -> list[str | None]:
  """Drops images whose shorter side (of the decoded image, before any resize) is below `min_side`:
  1x1 placeholders, icons, thumbnails. None disables."""
  if min_side is None:
    return [None] * len(sizes)
  return [f"shorter side {min(w, h)} px < {min_side}" if min(w, h) < min_side else None for w, h in sizes]


def aspect_ratio_reasons(sizes: Sequence[tuple[int, int]], max_ratio: float | None) -> list[str | None]:
  """Drops images whose longer / shorter side exceeds `max_ratio`: strips and banners, of which a square
  crop shows almost nothing. None disables."""
  if max_ratio is None:
    return [None] * len(sizes)
  return [
    f"aspect ratio {max(w, h) / min(w, h):.2f} > {max_ratio}" if max(w, h) > max_ratio * min(w, h) else None
    for w, h in sizes
  ]


def safety_checker_reasons(flagged: Sequence[bool]) -> list[str | None]:
  return ["flagged by the safety checker" if bool(f) else None for f in flagged]
