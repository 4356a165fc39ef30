"""Plan before you pay: AOT-compile the study's hot steps for a target (TPU topology or local devices),
report per-device memory against HBM, FLOPs and time, and the study's chip-hours (docs/plan.md)."""
