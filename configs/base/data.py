"""Data block: where ImageNet comes from, the study's splits, and the data check (the input pipeline's crops,
workers and image size are the classifier's `input` block, configs/base/classifier.py).

Paper scale reads real ILSVRC2012 (either layout, see docs/data.md); tiny draws a synthetic ImageNet of a
few real classes into the workdir and runs the very same code path in seconds on a CPU:

  .venv/bin/python -c "from configs.base import data; from jax_aug.data import subsets; \
      subsets.prepare_splits(data.get('tiny'), '/tmp/jax_aug_tiny')"
"""

import ml_collections

# The synthetic dataset's classes: tiger shark, goldfish, tiger cat, desktop computer, screen, pomegranate.
TINY_WNIDS = ("n01443537", "n01491361", "n02123159", "n03180011", "n04152593", "n07747607")


def get(scale: str) -> ml_collections.ConfigDict:
  tiny = scale == "tiny"
  config = ml_collections.ConfigDict()
  # Where the classes come from (jax_aug/data/classes.py, docs/data.md "Your own dataset"): "imagenet" (the
  # 1000 ILSVRC2012 classes, either `source` layout), "folder" (<root>/train/<class>/ images, optional
  # <root>/test/ or <root>/val/; classes = the sorted folder names) or "tfds:<name>" (a tfds dataset prepared
  # under tfds_data_dir; classes = its label names).
  config.dataset = "imagenet"
  # Folder and tfds datasets: optional classes.json with per class names, definition, hypernym, prompt_words.
  config.classes_file = ""
  # ImageNet's layout: "folder": <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG; "tfds": tfds
  # imagenet2012 prepared as array_record under tfds_data_dir (read via tfds.data_source, no TensorFlow).
  config.source = "folder"
  # Empty (tiny): <workdir>/synthetic_imagenet, and its tfds copy in <root>/tfds.
  config.root = "" if tiny else "/data/imagenet"
  config.tfds_data_dir = "" if tiny else "/data/tensorflow_datasets"
  config.tfds_name = "imagenet2012"
  # None: all classes found (the 1000 of ILSVRC2012); otherwise a tuple of wnids.
  config.wnids = TINY_WNIDS if tiny else None
  # {wnid: reason} JSON of classes dropped from every split (paper: the 10 classes retrieval could not
  # fill); empty: none.
  config.excluded_classes = ""
  # Paper Sec. 4: 10% subset, ceil(0.1 n_c) per class; a validation split of the same sizes; 20% baseline.
  config.subset_fraction = 0.1
  config.upper_bound_fraction = 0.2
  # Only for a dataset without a test (or val) split: ceil(test_fraction n_c) train images per class become
  # the test split, drawn before the subsets (jax_aug.data.subsets.hold_out_test).
  config.test_fraction = 0.1
  config.split_seed = 0
  # The data check (study stage `check`, or check_data.py alone): every image decoded once before any split
  # is drawn, in `num_workers` processes; undecodable ones are quarantined (strict: the check fails instead,
  # listing them). See docs/data.md, "Bad data".
  config.check = ml_collections.ConfigDict({"num_workers": 0 if tiny else 16, "strict": False})
  # Only for the synthetic dataset (tiny): drawn into `root` when absent. 100 train images per class make
  # the 10% subset 10 per class, enough for a visible augmentation effect at 32 px.
  config.synthetic = (
    ml_collections.ConfigDict({"train_per_class": 100, "val_per_class": 10, "image_size": 48, "seed": 0}) if tiny else None
  )
  return config
