"""Run at the start of every Python process a test starts (tests/conftest.py puts this folder on their
PYTHONPATH): PyTorch and torchvision are hidden from it, as a jax-aug install has neither (they come only with
the test extra), unless the test asks for them (JAX_AUG_TEST_TORCH=1: equivalence against PyTorch, `from_pt`).

Why: diffusers 0.39 imports torch whenever it is installed (diffusers.utils.distributed_utils), and with it
torch._dynamo and triton: 5-6 s of CPU per process on the 2-core test machine, and code paths of diffusers and
transformers that production never takes.
"""

import os
import sys

if os.environ.get("JAX_AUG_TEST_TORCH") != "1":
  # `import torch` raises ImportError and importlib.util.find_spec("torch") is None, which is how diffusers and
  # transformers look for them (transformers imports torchvision when it finds it, and torchvision needs torch).
  for name in ("torch", "torchvision"):
    sys.modules[name] = None
