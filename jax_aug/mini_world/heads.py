"""Stages `aesthetic` and `safety`: fitted in closed form on the tiny CLIP's image embeddings of the corpus.

- Aesthetic head: LAION's v1 shape (one Linear on L2-normalised image embeddings), ridge regression of the
  corpus's `aesthetic` column; written with the tensor names `jax_aug.retrieval.aesthetic` loads.
- Safety checker: diffusers' FlaxStableDiffusionSafetyChecker whose vision tower and projection are the
  tiny CLIP's. It flags an image when the cosine of its embedding to a concept embedding exceeds that
  concept's weight (rounded to 3 decimals: `checker_flags`); all 17 concept embeddings are set to the NSFW concept's
  mean direction with one
  threshold, chosen so at most `false_alarm` of the non-NSFW training images are flagged. The 3 "special
  care" embeddings keep threshold 1 (a cosine never exceeds it: never triggered).
The last `holdout` corpus items are never fitted on; the reported figures are on them.
"""

from __future__ import annotations

import jax
import numpy as np

from jax_aug.mini_world import models


def fit_aesthetic(embeddings: np.ndarray, scores: np.ndarray, *, ridge: float, holdout: int) -> tuple[dict, dict]:
  """({"weight" [1, D], "bias" [1]}, {holdout mse, r2, fraction below 5 true/predicted})."""
  x, y = embeddings[:-holdout].astype(np.float64), scores[:-holdout].astype(np.float64)
  x_mean, y_mean = x.mean(0), y.mean()
  xc = x - x_mean
  w = np.linalg.solve(xc.T @ xc + ridge * len(x) * np.eye(x.shape[1]), xc.T @ (y - y_mean))
  b = y_mean - x_mean @ w
  predicted = embeddings[-holdout:] @ w + b
  truth = scores[-holdout:]
  mse = float(np.mean((predicted - truth) ** 2))
  report = {
    "holdout_mse": mse,
    "holdout_r2": 1.0 - mse / float(np.var(truth)),
    "holdout_below5_true": float(np.mean(truth < 5)),
    "holdout_below5_predicted": float(np.mean(predicted < 5)),
  }
  return {"weight": w[None].astype(np.float32), "bias": np.asarray([b], np.float32)}, report


def fit_safety(
  embeddings: np.ndarray, is_nsfw: np.ndarray, *, false_alarm: float, holdout: int
) -> tuple[np.ndarray, float, dict]:
  """(NSFW direction [D] (unit), cosine threshold, holdout {recall, false alarm rate})."""
  e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  train, test = slice(None, -holdout), slice(-holdout, None)
  direction = e[train][is_nsfw[train]].mean(0)
  direction /= np.linalg.norm(direction)
  cos = e @ direction
  threshold = float(np.quantile(cos[train][~is_nsfw[train]], 1.0 - false_alarm))
  flagged = checker_flags(cos[test], threshold)
  report = {
    "holdout_nsfw_recall": float(np.mean(flagged[is_nsfw[test]])),
    "holdout_false_alarm": float(np.mean(flagged[~is_nsfw[test]])),
    "threshold": threshold,
  }
  return direction.astype(np.float32), threshold, report


def checker_flags(cosine: np.ndarray, threshold: float) -> np.ndarray:
  """diffusers' safety checker's rule for one concept: flagged when round(cosine - weight, 3) > 0."""
  return np.round(cosine - threshold, 3) > 0


def safety_checker_params(clip_params: dict, direction: np.ndarray, threshold: float) -> dict:
  """The FlaxStableDiffusionSafetyChecker parameter tree: the tiny CLIP's vision tower (its patch kernel
  spread over the checker's 28 px patches, models.SAFETY_VISION) and projection plus the fitted concept."""
  vision = jax.tree.map(np.asarray, clip_params["vision_model"])
  kernel = vision["embeddings"]["patch_embedding"]["kernel"]  # [4, 4, 3, width]
  up = models.SAFETY_UPSCALE
  vision["embeddings"] = dict(
    vision["embeddings"], patch_embedding={"kernel": np.repeat(np.repeat(kernel, up, axis=0), up, axis=1) / up**2}
  )
  return {
    "vision_model": {"vision_model": vision},
    "visual_projection": clip_params["visual_projection"],
    "concept_embeds": np.tile(direction[None], (17, 1)),
    "concept_embeds_weights": np.full((17,), threshold, np.float32),
    "special_care_embeds": np.tile(direction[None], (3, 1)),
    "special_care_embeds_weights": np.ones((3,), np.float32),
  }


def build_safety_checker():
  from diffusers.pipelines.stable_diffusion.safety_checker_flax import FlaxStableDiffusionSafetyChecker

  return FlaxStableDiffusionSafetyChecker(models.safety_config(), _do_init=False)
