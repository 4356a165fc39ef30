"""Flax ResNet-50 (torchvision v1.5 architecture), torchvision weight port, plateau schedule, trainer."""
