"""Flax Stable Diffusion: loading, tiny random models, and the sampling engine for augmentation sets.

`compat` is applied first: diffusers 0.39's Flax code calls JAX APIs that jax 0.10 removed.
"""

from jax_aug.diffusion import compat

compat.apply()
