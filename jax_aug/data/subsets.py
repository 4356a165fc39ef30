"""The study's splits of ILSVRC2012 train (paper Sec. 4), or of any dataset's train split, and the
class-exclusion list.

Per class c with n_c train images, after one seeded permutation of the class's images:

  subset      the first  k_c = ceil(0.1 n_c) images           (74..130 per class on real ImageNet)
  validation  the next   k_c images: disjoint, same per-class sizes, for early stopping and selection
  subset_20   the subset plus the k20_c - k_c images after the validation block, k20_c = ceil(0.2 n_c):
              the upper-bound baseline CONTAINS the 10% subset and is disjoint from validation, so it is
              "the subset plus the same amount of real data" that an augmentation set adds synthetically.

The official ILSVRC2012 validation split is the `test` split (final scores); other datasets' test split is
their `test` split, else their `val`/`validation` split, else drawn from train before anything else
(`hold_out_test`: per class the first ceil(test_fraction n_c) images of a seeded permutation of its own,
the rest being the train split above). Every split is a pure function of (the class's file list, seed):
the permutation of class c uses its own stream seeded by (seed, class_seed(c)) (jax_aug.data.classes: the
WordNet offset on ImageNet), so adding or excluding a class never changes another class's split.

Excluded classes (`excluded_classes.json`, `{class id: reason}`) are dropped from every split; labels are
assigned later from the remaining classes (see `study_wnids`), so exclusion never rewrites a manifest row.

Quarantined images (those the data check, `jax_aug.data.check`, could not decode) never enter a split,
and they move nothing else: the class is permuted over ALL its listed files, bad ones included, exactly as
without the check, the per-class sizes k_c and k20_c are computed from the listed count n_c, and only
then are the quarantined files taken out of the permuted order. So each quarantined file's place goes to
the next valid image in that order (a quarantined subset image is replaced by the image that would have
opened the validation block, and so on down the line), every other image keeps its split, and the
per-class counts stay those of the class's listed size.
"""

from __future__ import annotations

import collections
import logging
import math
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from jax_aug.data import classes as classes_lib
from jax_aug.data import sources
from jax_aug.data.classes import DatasetClasses, class_seed
from jax_aug.data.synthetic import COMPLETE_FILE, make_synthetic_imagenet
from jax_aug.io import JsonlManifest, atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)

SPLIT_NAMES = ("subset", "validation", "subset_20", "test")
EXCLUSIONS_FILE = "excluded_classes.json"


def per_class_counts(records: Sequence[dict]) -> dict[str, int]:
  return dict(sorted(collections.Counter(r["wnid"] for r in records).items()))


def fraction_size(n: int, fraction: float) -> int:
  """ceil(fraction * n), robust to float error (ceil(0.1 * 1300) must be 130, not 131)."""
  return math.ceil(round(fraction * n, 9))


def make_splits(
  train_records: Sequence[dict],
  *,
  seed: int,
  subset_fraction: float = 0.1,
  upper_bound_fraction: float = 0.2,
  quarantined: Collection[str] = (),
) -> dict[str, list[dict]]:
  """subset / validation / subset_20 of `train_records`, without the `quarantined` paths (see the module
  docstring for how they are replaced)."""
  quarantined = set(quarantined)
  if not 0 < subset_fraction <= upper_bound_fraction:
    raise ValueError(f"need 0 < subset_fraction ({subset_fraction}) <= upper_bound_fraction ({upper_bound_fraction})")
  by_class: dict[str, list[dict]] = collections.defaultdict(list)
  for record in train_records:
    by_class[record["wnid"]].append(record)
  splits = {"subset": [], "validation": [], "subset_20": []}
  for wnid in sorted(by_class):
    candidates = sorted(by_class[wnid], key=lambda r: r["path"])
    n = len(candidates)
    k, k20 = fraction_size(n, subset_fraction), fraction_size(n, upper_bound_fraction)
    order = np.random.default_rng([seed, class_seed(wnid)]).permutation(n)
    picked = [candidates[i] for i in order if candidates[i]["path"] not in quarantined]
    if 2 * k + (k20 - k) > len(picked):
      bad = f" ({n - len(picked)} quarantined, {len(picked)} usable)" if len(picked) < n else ""
      raise ValueError(
        f"class {wnid} has {n} train images{bad}: too few for a subset of {k}, a disjoint"
        f" validation split of {k} and {k20 - k} more for the {upper_bound_fraction:.0%} subset"
      )
    splits["subset"].extend(picked[:k])
    splits["validation"].extend(picked[k : 2 * k])
    splits["subset_20"].extend(picked[:k] + picked[2 * k : k + k20])
  return splits


def load_exclusions(path: str | os.PathLike) -> dict[str, str]:
  """`{class id: reason}` from an excluded_classes.json; an absent file means no exclusions."""
  path = Path(path)
  if not path.exists():
    return {}
  excluded = read_json(path)
  if not isinstance(excluded, dict) or not all(isinstance(v, str) and v for v in excluded.values()):
    raise ValueError(f"{path}: expected a JSON object {{class id: non-empty reason}}")
  for wnid in excluded:
    try:
      classes_lib.check_class_id(wnid)
    except ValueError as e:
      raise ValueError(f"{path}: {e.args[0]} in the exclusion list") from None
  return excluded


def write_exclusions(path: str | os.PathLike, excluded: Mapping[str, str]) -> None:
  for wnid in excluded:
    classes_lib.check_class_id(wnid)
  atomic_write_json(path, dict(sorted(excluded.items())))


def study_wnids(
  wnids: Sequence[str] | None, excluded: Mapping[str, str] = (), classes: DatasetClasses | None = None
) -> list[str]:
  """The study's classes in the dataset's label order (ImageNet, the default: ILSVRC2012's) without the
  excluded ones; label = position in this list."""
  classes = classes or classes_lib.imagenet()
  wnids = classes.ids if wnids is None else list(wnids)
  return [w for w in classes.ordered(wnids) if w not in excluded]


def apply_exclusions(records: Sequence[dict], excluded: Mapping[str, str]) -> list[dict]:
  return [r for r in records if r["wnid"] not in excluded]


def write_manifest(path: str | os.PathLike, records: Sequence[dict]) -> None:
  """Writes a whole split manifest at once (temp + rename): it is complete or absent, never partial."""
  atomic_write_text(path, "".join(JsonlManifest.line(dict(r)) for r in records))


def read_manifest(path: str | os.PathLike, *, check_files: bool = True) -> list[dict]:
  """A split manifest with relative file paths resolved against its directory; with `check_files`,
  a listed file that does not exist is an error naming it and the manifest."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"split manifest not found: {path}")
  records = []
  for number, record in JsonlManifest(path).read_numbered():
    if not isinstance(record, dict) or "wnid" not in record or "path" not in record:
      raise ValueError(f"{path}:{number}: a record needs 'wnid' and 'path', got {record}")
    try:
      classes_lib.check_class_id(record["wnid"])
    except ValueError as e:
      raise ValueError(f"{path}:{number}: {e.args[0]}") from None
    records.append(record)
    if record["path"].startswith("tfds://"):
      continue
    file = Path(record["path"])
    if not file.is_absolute():
      file = (path.parent / file).resolve()
      record["path"] = str(file)
    if check_files and not file.is_file():
      raise FileNotFoundError(f"{path}:{number}: listed image {file} does not exist")
  return records


def dataset_dirs(config, workdir: str | os.PathLike) -> tuple[Path, Path]:
  """(folder-layout root, tfds data_dir); empty config entries mean `<workdir>/synthetic_imagenet`."""
  root = Path(config.root) if config.root else Path(workdir) / "synthetic_imagenet"
  return root, Path(config.tfds_data_dir) if config.tfds_data_dir else root / "tfds"


def source_tfds_name(config) -> str:
  """The tfds dataset the data block reads: "tfds:<name>"'s name, or ImageNet's `tfds_name`."""
  dataset = config.get("dataset", classes_lib.IMAGENET)
  return classes_lib.tfds_name(dataset) if dataset.startswith(classes_lib.TFDS_PREFIX) else config.tfds_name


def image_reader(config, workdir: str | os.PathLike) -> sources.ImageReader:
  """The reader of the data block's records (files, or tfds:// records of its tfds dataset)."""
  return sources.ImageReader(dataset_dirs(config, workdir)[1], source_tfds_name(config))


def configured_classes(config, workdir: str | os.PathLike) -> DatasetClasses:
  """The classes of the data block's dataset (jax_aug.data.classes.dataset_classes)."""
  return classes_lib.dataset_classes(config, *dataset_dirs(config, workdir))


def _uses_tfds(config) -> bool:
  dataset = config.get("dataset", classes_lib.IMAGENET)
  return dataset.startswith(classes_lib.TFDS_PREFIX) or (dataset == classes_lib.IMAGENET and config.source == "tfds")


def test_source(config, workdir: str | os.PathLike) -> str | None:
  """The split of the source that becomes the study's test split: ImageNet's official validation split
  ('val' folders / tfds 'validation'); for other datasets `test/` (tfds 'test'), else `val/` (tfds
  'validation'); None when the dataset has neither (the test split is then drawn from train,
  `hold_out_test`)."""
  root, tfds_data_dir = dataset_dirs(config, workdir)
  dataset = config.get("dataset", classes_lib.IMAGENET)
  if dataset == classes_lib.IMAGENET:
    return "validation" if config.source == "tfds" else "val"
  if dataset == classes_lib.FOLDER:
    return next((s for s in ("test", "val") if (root / s).is_dir()), None)
  splits = sources.tfds_splits(str(tfds_data_dir), source_tfds_name(config))
  return next((s for s in ("test", "validation") if s in splits), None)


def _source_records(
  config, workdir, split: str, wnids: Sequence[str] | None, classes: DatasetClasses
) -> tuple[list[dict], list[str]]:
  """(records, ignored files) of split `split` ('train', or the one `test_source` names) of the configured
  source."""
  root, tfds_data_dir = dataset_dirs(config, workdir)
  if _uses_tfds(config):
    return sources.tfds_records(tfds_data_dir, split, name=source_tfds_name(config), wnids=wnids, classes=classes), []
  if config.source != "folder":
    raise ValueError(f"unknown data source {config.source!r}: expected 'folder' or 'tfds'")
  return sources.folder_listing(root / split, wnids, classes)


def hold_out_test(train_records: Sequence[dict], *, seed: int, fraction: float) -> tuple[list[dict], list[dict]]:
  """(train without the test split, the test split) of a dataset that has no test split: per class the
  first ceil(fraction n_c) images of a seeded permutation (the splits' rule, in a stream of its own:
  (seed, class, 1)), so the study's subsets are then drawn from the rest."""
  by_class: dict[str, list[dict]] = collections.defaultdict(list)
  for record in train_records:
    by_class[record["wnid"]].append(record)
  train, test = [], []
  for wnid in sorted(by_class):
    candidates = sorted(by_class[wnid], key=lambda r: r["path"])
    order = np.random.default_rng([seed, class_seed(wnid), 1]).permutation(len(candidates))
    k = fraction_size(len(candidates), fraction)
    test += [candidates[i] for i in order[:k]]
    train += [candidates[i] for i in order[k:]]
  return train, test


def ensure_dataset(config, workdir: str | os.PathLike) -> None:
  """With `config.synthetic` set, draws the synthetic dataset into its root (see `dataset_dirs`) when absent."""
  root, _ = dataset_dirs(config, workdir)
  if config.get("synthetic") and not (root / COMPLETE_FILE).exists():
    synthetic = config.synthetic
    make_synthetic_imagenet(
      root,
      wnids=config.wnids,
      train_per_class=synthetic.train_per_class,
      val_per_class=synthetic.val_per_class,
      image_size=synthetic.image_size,
      seed=synthetic.seed,
      tfds=config.source == "tfds",
    )


def source_records(config, workdir: str | os.PathLike) -> tuple[dict[str, list[dict]], list[str]]:
  """({"train", "val"}: every record of the configured source's train split and of the split that becomes
  the study's test split (`test_source`; drawn from train by `hold_out_test` when the dataset has none),
  the study's classes only; the files of the folder layout that are not images by their suffix)."""
  classes = configured_classes(config, workdir)
  wnids = None if config.wnids is None else list(config.wnids)
  listed, ignored = {}, []
  listed["train"], ignored = _source_records(config, workdir, "train", wnids, classes)
  test_split = test_source(config, workdir)
  if test_split is None:
    listed["train"], listed["val"] = hold_out_test(listed["train"], seed=config.split_seed, fraction=config.test_fraction)
  else:
    train_wnids = sorted({r["wnid"] for r in listed["train"]})
    listed["val"], test_ignored = _source_records(config, workdir, test_split, wnids or train_wnids, classes)
    ignored += test_ignored
  if ignored:
    log.warning(
      "ignored %d files that are not images (%s), e.g. %s",
      len(ignored),
      "/".join(sources.IMAGE_SUFFIXES),
      ", ".join(ignored[:3]),
    )
  return listed, ignored


def prepare_splits(config, workdir: str | os.PathLike, *, quarantine: Mapping[str, str] = ()) -> dict[str, Path]:
  """Writes `<workdir>/splits/{subset,validation,subset_20,test}.jsonl` and `info.json`; returns the paths.

  `config` is the data block of configs/base/data.py; the synthetic dataset is drawn first when configured
  (`ensure_dataset`). `quarantine` ({path: reason}, the data check's `read_quarantine`) names images that
  no split may hold (see the module docstring). Manifests already present are kept (resume), since they
  are a pure function of the source, the quarantine and the seed.
  """
  split_dir = Path(workdir) / "splits"
  paths = {name: split_dir / f"{name}.jsonl" for name in SPLIT_NAMES}
  info_path = split_dir / "info.json"
  if info_path.exists() and all(p.exists() for p in paths.values()):
    log.info("splits already written in %s", split_dir)
    return paths
  ensure_dataset(config, workdir)
  quarantine = dict(quarantine)
  excluded = load_exclusions(config.excluded_classes) if config.get("excluded_classes") else {}
  listed, _ = source_records(config, workdir)
  train = apply_exclusions(listed["train"], excluded)
  splits = make_splits(
    train,
    seed=config.split_seed,
    subset_fraction=config.subset_fraction,
    upper_bound_fraction=config.upper_bound_fraction,
    quarantined=quarantine,
  )
  splits["test"] = [r for r in apply_exclusions(listed["val"], excluded) if r["path"] not in quarantine]
  for name, records in splits.items():
    write_manifest(paths[name], records)
  classes = configured_classes(config, workdir)
  classes_lib.write_split_classes(split_dir, classes)
  atomic_write_json(
    info_path,
    {
      "wnids": study_wnids(sorted({r["wnid"] for r in train}), excluded, classes),
      "excluded": dict(excluded),
      "train_per_class": per_class_counts(train),
      "quarantined_per_class": per_class_counts([r for r in train + listed["val"] if r["path"] in quarantine]),
      "split_per_class": {name: per_class_counts(records) for name, records in splits.items()},
      "seed": config.split_seed,
      "subset_fraction": config.subset_fraction,
      "upper_bound_fraction": config.upper_bound_fraction,
    },
  )
  return paths
