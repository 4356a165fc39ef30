"""PyTorch twins of our trainers: the same training in torchvision / diffusers, fed the same inputs, so
the only difference is the framework (docs/twin.md). The only package of jax_aug that imports torch."""
