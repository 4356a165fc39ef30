"""The study on your own image-classification dataset instead of ImageNet (docs/data.md, "Your own dataset").

  python run_study.py --config=configs/custom_dataset.py --workdir=runs/flowers \
      --config.data.root=/data/flowers [--config.data.classes_file=/data/flowers/classes.json]

`root` holds `train/<class>/*.jpg` (any folder names; labels in sorted order, as torchvision's ImageFolder),
optionally `test/<class>/` or `val/<class>/` (the test split; without either, 10% of train per class is
held out for it first). A prepared tfds dataset instead: `--config.data.dataset=tfds:oxford_flowers102
--config.data.tfds_data_dir=/data/tensorflow_datasets` (the study's classifiers read that dataset's records).
The fields below are the ones a user edits; the data fields are shared by reference with every method's
data block and the classifier's tfds reader, so one `--config.data.<field>=` sets them all.

`get_config("paper")` (the default) uses the paper's models and recipe (SD v1.4, CLIP ViT-L/14, ResNet-50;
set the weights and retrieval index as for configs/paper.py); `get_config("tiny")` the tiny random-init
models of configs/tiny.py, the same code path in minutes on a CPU. Methods: the paper's, less Sariyildiz's
prompts, which need a definition and a hypernym per class (give them in classes.json and add
`sariyildiz_prompts` to `methods`). Table 1's paper column stays ImageNet's numbers, for reference only.
"""

from pathlib import Path

import ml_collections

from jax_aug.study.config_files import point_data_blocks, study_config

# What a user edits (or passes as --config.data.<field>=...).
DATASET = "folder"  # "folder" | "tfds:<name>"
ROOT = "/data/my_dataset"  # folder datasets: train/<class>/..., optional test/ or val/
CLASSES_FILE = ""  # optional classes.json: per class names, definition, hypernym, prompt_words
TFDS_DATA_DIR = "/data/tensorflow_datasets"  # tfds datasets: where `tfds build` prepared them
METHODS = (
  "baseline_10pct,baseline_20pct,simple_prompt,simple_prompt_no_ws,clip_prompts,boomerang,ft_conditioning,"
  "ft_cluster_conditioning,pseudo_word_dm,textual_inversion,imagic,retrieval"
)


def get_config(arg: str | None = None):
  scale = arg or "paper"
  config = study_config(Path(__file__).resolve().parent, scale)
  config.methods = METHODS
  config.report.figure5_classes = ""  # the study's first classes (the paper's are ImageNet wnids)
  shared = {
    "dataset": ml_collections.FieldReference(DATASET),
    "classes_file": ml_collections.FieldReference(CLASSES_FILE),
    "root": ml_collections.FieldReference(ROOT),
    "tfds_data_dir": ml_collections.FieldReference(TFDS_DATA_DIR),
  }
  point_data_blocks(config, wnids=None, **shared)  # wnids None: every class of the data
  config.classifier.input.tfds_data_dir = shared["tfds_data_dir"]
  config.method_configs.baseline_10pct.method.display_name = "10% subset"
  config.method_configs.baseline_20pct.method.display_name = "20% subset"
  return config
