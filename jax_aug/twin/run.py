"""A classifier run together with its PyTorch twin and the report that overlays them.

Layout: the classifier run in `<workdir>` exactly as without the twin, the twin in `<workdir>/twin_torch/`
(same files), and `<workdir>/twin_report.{md,png}`. Each part resumes on its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from ml_collections import ConfigDict

from jax_aug import io
from jax_aug.classifier import train
from jax_aug.twin import classifier as twin_classifier
from jax_aug.twin import report

TWIN_DIR = "twin_torch"


def train_with_twin(config: ConfigDict, workdir: str | os.PathLike) -> dict:
  """Our classifier in `workdir`, then its PyTorch twin and the report; {"ours", "twin", "report"}."""
  workdir = Path(workdir)
  ours = train.train_and_evaluate(config, workdir)
  twin = twin_classifier.train_and_evaluate(config, workdir / TWIN_DIR, train.load_run_data(config, workdir))
  return {"ours": ours, "twin": twin, "report": str(report.write_report(workdir, workdir / TWIN_DIR, workdir, config))}


def twin_of_run(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
  """The twin of a finished classifier run (its recorded config.json, the same data) in `out/twin_torch`,
  and the report in `out`; returns the report's path."""
  run_dir, out = Path(run_dir), Path(out)
  config = ConfigDict(io.read_json(run_dir / train.CONFIG_FILE))
  twin_classifier.train_and_evaluate(config, out / TWIN_DIR, train.load_run_data(config, run_dir))
  return report.write_report(run_dir, out / TWIN_DIR, out, config)


def finetune_with_twin(config: ConfigDict, workdir: str | os.PathLike) -> dict:
  """Our textual-inversion fine-tuning in `workdir`, its PyTorch twin in `<workdir>/twin_torch` and the
  report in `workdir`; {"ours": progress, "report": path}."""
  from jax_aug.finetune.trainer import finetune  # pylint: disable=g-import-not-at-top
  from jax_aug.twin import finetune as twin_finetune  # pylint: disable=g-import-not-at-top

  workdir = Path(workdir)
  progress = finetune(config, workdir)
  twin_finetune.textual_inversion_twin(config, workdir, workdir / TWIN_DIR)
  return {"ours": progress, "report": str(report.write_finetune_report(workdir, workdir / TWIN_DIR, workdir))}
