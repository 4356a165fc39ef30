"""The study's calls into the other areas' public functions, and the study-wide data view.

Each function here maps the study's state (where the splits, the exclusion list and a method's images are)
onto one area's public entry point and its own config block; nothing here reimplements an area.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path

from jax_aug.data import augmentation_set, subsets
from jax_aug.data import classes as classes_lib
from jax_aug.io import read_json

# Official ILSVRC2012 validation split (50 per class), the split every final score is computed on.
EVAL_SPLIT = "test"
EVAL_SPLIT_DESCRIPTION = "the test split (the official ILSVRC2012 validation images; tiny: the synthetic 'val' images)"
# The same on a dataset other than ImageNet (jax_aug.data.subsets.test_source decides which).
EVAL_SPLIT_DESCRIPTION_OWN_DATA = "the test split (the dataset's test/ or val/ split, else images held out from train)"
# The mini world's (configs/mini.py): its target dataset in ImageNet's layout, not ImageNet.
EVAL_SPLIT_DESCRIPTION_MINI_WORLD = "the test split (the mini world's target test split, drawn apart from its train images)"


def check_data(data_config, out: Path, *, data_dir: Path) -> None:
  """The data check (`jax_aug.data.check`) of every train and val image of the study's source, into
  `out` (quarantine.jsonl, summary.json), before any split is drawn; the dataset is drawn first at tiny
  scale, into `data_dir` where the data stage reads it."""
  from jax_aug.data import check

  subsets.ensure_dataset(data_config, data_dir)
  listed, ignored = subsets.source_records(data_config, data_dir)
  reader = subsets.image_reader(data_config, data_dir)
  check.check_records(
    listed["train"] + listed["val"],
    out,
    reader=reader,
    num_workers=data_config.check.num_workers,
    strict=data_config.check.strict,
    ignored=ignored,
  )


def check_prompt_strategies(config, selected, data_dir: Path) -> None:
  """Before any stage runs: every selected prompt method's strategy has the class fields it reads in the
  configured dataset (Sariyildiz's definition and hypernym; jax_aug.data.prompts.check_strategy)."""
  from jax_aug import method_kinds
  from jax_aug.data import prompts

  strategies = [config.method_configs[m.name].method.prompt_strategy for m in selected if m.kind == method_kinds.PROMPT]
  if strategies:
    classes = subsets.configured_classes(config.data, data_dir)
    for strategy in strategies:
      prompts.check_strategy(strategy, classes)


def prepare_data(data_config, out: Path, *, check_dir: Path) -> None:
  """The dataset's splits in `out/splits/`, without the images the data check in `check_dir` quarantined;
  no exclusions yet."""
  from jax_aug.data import check

  if data_config.get("excluded_classes"):
    raise ValueError(
      "config.data.excluded_classes must be empty in a study: the study excludes the classes retrieval"
      " could not fill, for every method alike, after retrieval ran"
    )
  subsets.prepare_splits(data_config, out, quarantine=check.read_quarantine(check_dir))


@dataclasses.dataclass(frozen=True)
class StudyData:
  """The splits as the study sees them: excluded classes dropped, labels = positions in `wnids`."""

  split_dir: Path
  excluded: Mapping[str, str]

  @functools.cached_property
  def classes(self) -> classes_lib.DatasetClasses:
    """The dataset's classes, as the data stage stored them beside the splits (read once)."""
    return classes_lib.read_split_classes(self.split_dir)

  @property
  def wnids(self) -> list[str]:
    """The study's classes; fewer than 2 left after the exclusions is refused: a classifier of one class scores
    100% whatever it learned."""
    info = read_json(self.split_dir / "info.json")
    wnids = subsets.study_wnids(info["wnids"], self.excluded, self.classes)
    if len(wnids) < 2:
      kept = f"the study keeps {len(wnids)} of its {len(info['wnids'])} classes"
      if not self.excluded:
        raise ValueError(f"{kept} ({self.split_dir / 'info.json'}), and a classifier needs at least 2")
      first, reason = next(iter(self.excluded.items()))
      raise ValueError(
        f"{kept}: retrieval excluded {len(self.excluded)} (e.g. {first}: {reason}), and a classifier needs at least 2."
        " Is the retrieval's index or CLIP the right one (random weights retrieve arbitrary images)? Its filters"
        " and k are in the retrieval config"
      )
    return wnids

  @property
  def class_names(self) -> dict[str, str]:
    classes = self.classes
    return {w: classes[w].name for w in self.wnids}

  def split_path(self, name: str) -> Path:
    if name not in subsets.SPLIT_NAMES:
      raise ValueError(f"unknown split {name!r}: expected one of {subsets.SPLIT_NAMES}")
    return self.split_dir / f"{name}.jsonl"

  def split(self, name: str) -> list[dict]:
    return subsets.apply_exclusions(subsets.read_manifest(self.split_path(name)), self.excluded)


def study_data(data_dir: Path, exclusion: Path | None) -> StudyData:
  return StudyData(Path(data_dir) / "splits", subsets.load_exclusions(exclusion) if exclusion else {})


def read_exclusions(path: Path) -> list[dict]:
  return [{"wnid": w, "reason": r} for w, r in subsets.load_exclusions(path).items()]


def load_augmentation(root: Path) -> list[dict]:
  return augmentation_set.load_augmentation_set(root)


def resample_sets(
  augmentation_dir: Path, out: Path, *, data_dir: Path, exclusion: Path | None, n_sets: int, seed: int
) -> list[Path]:
  """`out/set_<i>.jsonl`: n resampled sets with the 10% subset's per-class counts, excluded classes dropped."""
  data = study_data(data_dir, exclusion)
  counts = subsets.per_class_counts(data.split("subset"))
  records = subsets.apply_exclusions(load_augmentation(augmentation_dir), data.excluded)
  paths = []
  for index, drawn in enumerate(augmentation_set.resample(records, counts, n_sets=n_sets, seed=seed)):
    path = Path(out) / f"set_{index}.jsonl"
    subsets.write_manifest(path, drawn)
    paths.append(path)
  return paths


CLASSIFIER_DIR = "classifier"


def classifier_results_path(stage_dir: Path) -> Path:
  from jax_aug.classifier.train import RESULTS_FILE

  return Path(stage_dir) / CLASSIFIER_DIR / RESULTS_FILE


def train_classifier(
  classifier_config,
  out: Path,
  *,
  data_dir: Path,
  exclusion: Path | None,
  subset: str,
  augmentation: Path | None,
  evaluate_on: str,
  seed: int,
  resample_index: int = -1,
) -> dict:
  """One classifier (`jax_aug.classifier.train.train_and_evaluate`) on `subset` (+ one resampled set),
  early-stopped on the validation split and scored on `evaluate_on` ("test", or "validation" when choosing
  a fine-tuning checkpoint), with the excluded classes dropped from every split and from the labels."""
  from jax_aug.classifier.train import train_and_evaluate

  if evaluate_on not in ("test", "validation"):
    raise ValueError(f"evaluate_on must be 'test' or 'validation', got {evaluate_on!r}")
  data = study_data(data_dir, exclusion)
  # The study's view of the splits (exclusions applied, absolute paths), written next to the run so the
  # classifier's recorded config names exactly what it read.
  inputs = Path(out) / "inputs"
  for split in sorted({subset, "validation", evaluate_on}):
    subsets.write_manifest(inputs / f"{split}.jsonl", data.split(split))
  config = classifier_config.copy_and_resolve_references()
  dataset = data.classes.dataset
  if dataset.startswith(classes_lib.TFDS_PREFIX):  # the split records are `tfds://` paths into this dataset
    config.input.tfds_name = classes_lib.tfds_name(dataset)
  config.train_manifests = (str(inputs / f"{subset}.jsonl"),) + ((str(augmentation),) if augmentation else ())
  config.validation_manifest = str(inputs / "validation.jsonl")
  config.test_manifest = str(inputs / "test.jsonl") if evaluate_on == "test" else ""
  config.wnids = tuple(data.wnids)
  config.seed = seed
  config.resample_index = resample_index
  return train_and_evaluate(config, Path(out) / CLASSIFIER_DIR)


def train_twin(train_stage_dir: Path, out: Path, *, workdir: Path) -> Path:
  """The PyTorch twin (`jax_aug.twin.run.twin_of_run`) of a finished classifier stage, in `out`. A stage that
  reused a checkpoint-selection classifier (its results name `reused_from`, relative to `workdir`) holds no
  run of its own: the twin then reruns that classifier, which trained on the same set with the same seed."""
  from jax_aug.io import read_json
  from jax_aug.twin.run import twin_of_run

  results_path = classifier_results_path(train_stage_dir)
  reused_from = read_json(results_path).get("reused_from")
  run_dir = (Path(workdir) / reused_from).parent if reused_from else results_path.parent
  return twin_of_run(run_dir, out)


# --- models ------------------------------------------------------------------------------------------


def prepare_mini_world(block) -> None:
  """`jax_aug.mini_world.world.prepare_world` into `block.folder` with the weights in `block.weights`."""
  from jax_aug.mini_world.world import prepare_world

  prepare_world(block.folder, block.weights, corpus_size=block.corpus_size, workers=block.workers)


def tiny_model_seeds(method_configs) -> list[int]:
  """Seeds of the tiny random-init SDs the methods ask for (an empty `model.path` means "build one")."""
  seeds = set()
  for config in method_configs:
    model = config.get("model") if config is not None else None
    if model is not None and not model.get("path"):
      seeds.add(int(model.tiny_seed))
  return sorted(seeds)


def build_tiny_models(out: Path, seeds) -> None:
  """One tiny random-init SD per seed, built once for the whole study so every method (and every
  fine-tuned checkpoint) starts from the same weights, as all methods share SD v1.4 in the paper."""
  import shutil

  from jax_aug.diffusion import tiny

  for seed in seeds:
    path = Path(out) / f"tiny_sd_{seed}"
    if not (path / "model_index.json").exists():
      shutil.rmtree(path, ignore_errors=True)  # a build killed before it finished
      tiny.build_tiny_sd(path, seed=seed)


def with_study_model(config, models_dir: Path):
  """A copy of a method config whose empty `model.path` points at the study's tiny SD of its seed."""
  config = config.copy_and_resolve_references()
  model = config.get("model")
  if model is not None and not model.get("path"):
    model.path = str(Path(models_dir) / f"tiny_sd_{int(model.tiny_seed)}")
  return config


# --- fine-tuning ---------------------------------------------------------------------------------------


def _study_method_config(method_config, data_dir: Path, models_dir: Path):
  """A method config reading the study's splits (all classes: exclusions come later) and model."""
  config = with_study_model(method_config, models_dir)
  config.splits_dir = str(Path(data_dir) / "splits")
  return config


def finetune(method_config, out: Path, *, data_dir: Path, models_dir: Path) -> None:
  """`jax_aug.finetune.trainer.finetune` of a fine-tuned method's config on the study's splits."""
  from jax_aug.finetune.trainer import finetune as run_finetune

  run_finetune(_study_method_config(method_config, data_dir, models_dir), out)


def sample_finetuned(
  method_config, out: Path, *, finetune_dir: Path, checkpoint: Path, data_dir: Path, models_dir: Path
) -> None:
  """`jax_aug.finetune.sampling.sample_finetuned`: the method's images from one kept checkpoint."""
  from jax_aug.finetune.sampling import sample_finetuned as run_sampling

  config = _study_method_config(method_config, data_dir, models_dir)
  config.finetune.workdir = str(finetune_dir)
  config.finetune.checkpoint = str(checkpoint)
  run_sampling(config, out)


def finetune_checkpoints(finetune_dir: Path) -> dict[str, dict]:
  """Distinct kept checkpoints of a fine-tuning run: {checkpoint name: {"path", "roles"}}; several roles
  (best_train, best_val, epoch_<e>) often name the same epoch, which is sampled and scored once."""
  from jax_aug.finetune.checkpoints import kept_checkpoints

  unique: dict[str, dict] = {}
  for role, path in sorted(kept_checkpoints(finetune_dir).items()):
    entry = unique.setdefault(Path(path).name, {"path": str(path), "roles": []})
    entry["roles"].append(role)
  return unique


# --- sampling ------------------------------------------------------------------------------------------


def sample(method_config, out: Path, *, data_dir: Path, models_dir: Path) -> None:
  """`jax_aug.diffusion.run.sample_augmentation_set` (prompt methods, Boomerang) into `out`, for every
  class of the study's splits (Boomerang reads its subset images from them)."""
  from jax_aug.diffusion.run import sample_augmentation_set

  sample_augmentation_set(_study_method_config(method_config, data_dir, models_dir), out)


# --- retrieval -----------------------------------------------------------------------------------------

RETRIEVAL_AUGMENTATION_DIR = "augmentation_set"


def retrieve(method_config, out: Path, *, data_dir: Path) -> None:
  """`jax_aug.retrieval.pipeline.retrieve` for the study's classes; leaves the augmentation set and the
  study's exclusion list in `out`."""
  from jax_aug.retrieval.pipeline import AUGMENTATION_DIR
  from jax_aug.retrieval.pipeline import retrieve as run_retrieval

  if AUGMENTATION_DIR != RETRIEVAL_AUGMENTATION_DIR:
    raise RuntimeError(f"retrieval writes its set to {AUGMENTATION_DIR!r}, the study expects {RETRIEVAL_AUGMENTATION_DIR!r}")
  config = method_config.copy_and_resolve_references()
  config.classes = tuple(read_json(Path(data_dir) / "splits" / "info.json")["wnids"])
  if (Path(data_dir) / "splits" / classes_lib.CLASSES_FILE).is_file():
    config.dataset_classes = str(Path(data_dir) / "splits" / classes_lib.CLASSES_FILE)
  run_retrieval(config, out)


def retrieval_augmentation_dir(retrieval_dir: Path) -> Path:
  return Path(retrieval_dir) / RETRIEVAL_AUGMENTATION_DIR


def exclusion_list_path(retrieval_dir: Path) -> Path:
  """Where retrieval leaves `{wnid: reason}` of the classes it could not fill (jax_aug.data.subsets)."""
  return Path(retrieval_dir) / subsets.EXCLUSIONS_FILE
