"""jax-aug: diffusion models vs. retrieval for data augmentation (Burg et al., 2023) in JAX/Flax."""

__version__ = "0.1.0"
