"""Study-level settings of the runner (run_study.py): which methods and stages, resampling, report.

Everything a single area decides (classifier recipe, sampling, fine-tuning, retrieval, data) lives in
that area's own config block; this block holds only what the study adds on top.
"""

import ml_collections

# Example classes of the paper's Figure 5 and Sec. 4 (class ambiguity): tiger shark, papillon, desktop
# computer, motor scooter, mailbag, and crane, both the bird (n02012849) and the machine (n03126707): "the
# label 'crane' leads to generated images referring either to the machine or the bird".
PAPER_FIGURE5_CLASSES = "n01491361,n02086910,n03180011,n03791053,n03709823,n02012849,n03126707"


def get(scale: str) -> ml_collections.ConfigDict:
  tiny = scale == "tiny"
  config = ml_collections.ConfigDict()
  config.scale = scale
  config.seed = 0
  # Comma-separated method names of jax_aug/study/methods.py (incl. baseline_10pct, baseline_20pct), or "all".
  config.methods = "all"
  # The paper's ablations as extra, marked rows of Table 1 (jax_aug/study/methods.py ABLATIONS):
  # comma-separated names, "all", or "" (none; the default, they multiply the cost).
  config.ablations = ""
  # Comma-separated stage-name patterns to run (e.g. "subsets,augment/*"); "*" runs the whole study.
  config.stages = "*"
  # Comma-separated stage-name patterns to run again under a changed config (old output is kept aside).
  config.redo = ""
  # Comma-separated stage-name patterns kept under a changed config without running again: for a change that
  # leaves their output as it is (e.g. a field a code update added at its old behaviour). Recorded in the
  # stage's record and listed in the report's notes.
  config.adopt = ""
  # On a CPU: the host's CPU as this many XLA devices (jax_num_cpu_devices; 0: JAX's default, one). XLA runs a small
  # model's ops on about one core per device, so sampling and fine-tuning, which split their batch over the
  # devices, use more cores this way (configs/mini.py; docs/study.md). No effect on GPU or TPU runs.
  config.cpu_devices = 0
  # Paper: 5 resampled augmentation sets per method, one classifier each; tiny: 2, the fewest that give
  # a standard error.
  config.n_resamples = 2 if tiny else 5
  # Fine-tuned methods: the final checkpoint is the one whose samples give the best validation top-1 of a
  # classifier trained on subset + those samples (resampled set 0).
  config.selection = ml_collections.ConfigDict()
  config.selection.resample = 0

  # Comma-separated method names (or "all") whose classifier run r0 also trains its PyTorch twin
  # (jax_aug/twin, needs the `twin` extra): stage twin/<method>, with twin_report.{md,png}. Empty: none.
  config.twin_methods = ""

  config.report = ml_collections.ConfigDict()
  # Empty: the first classes of the study (tiny's synthetic classes).
  config.report.figure5_classes = "" if tiny else PAPER_FIGURE5_CLASSES
  config.report.figure5_images_per_class = 3 if tiny else 4
  config.report.figure5_max_classes = 3 if tiny else 7
  # Says so in the report: numbers from random-init models test the machinery, not the science.
  config.report.tiny_random_init_models = tiny
  # Reuse XLA compilations across the study's many identically shaped classifier runs.
  config.compilation_cache = True
  # Empty: <workdir>/.jax_cache. Several workdirs may share one (compilations do not change numbers).
  config.compilation_cache_dir = ""
  return config
