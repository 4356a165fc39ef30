"""Retrieval from the diffusion model's training data (paper method 10): CLIP text queries against a
local faiss or `clip back` kNN index, aesthetic / NSFW / near-duplicate filters, gradual k, downloads,
and an index builder. The study calls `retrieve(config, workdir)`."""

from jax_aug.retrieval.pipeline import exclusion_list_path, retrieve

__all__ = ["retrieve", "exclusion_list_path"]
