"""Personalization fine-tuning of Stable Diffusion: one trainer for the five methods of the paper."""
