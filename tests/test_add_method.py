"""Adding a method takes one prompt-strategy function and one config file, no package file edited: a method
defined only here (its strategy registered by the decorator, its config written into tmp_path through the
shared helper) runs through the study runner next to the 10% baseline and appears in the report."""

import json
from pathlib import Path

import pytest

from jax_aug.data import prompts
from jax_aug.data.augmentation_set import load_augmentation_set
from jax_aug.study import runner
from jax_aug.study.config_files import load_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GOLDFISH, ORANGE = "n01443537", "n07747607"


@prompts.strategy("test_numbered_first_lemma")
def numbered_first_lemma(cls, image_index, seed, lemmas):
  """The test method's prompts: the first lemma and the image's number (seed and lemma choice unused)."""
  del seed, lemmas
  return f"Picture {image_index} of a {cls.lemmas[0]}."


METHOD_CONFIG = f'''
from pathlib import Path

from jax_aug.study.config_files import load_module

common = load_module(Path({str(CONFIGS)!r}) / "common.py")


def get_config(arg="tiny"):
  return common.method_config(__file__, arg, kind="prompt", display_name="Numbered prompt", family="prompt",
                              prompt_strategy="test_numbered_first_lemma")
'''


@pytest.mark.slow  # ~60 s on the loaded 2-core machine: building the tiny SD and compiling its sampler
def test_a_method_defined_by_one_function_and_one_config_runs_through_the_study(tmp_path):
  (tmp_path / "numbered_prompt.py").write_text(METHOD_CONFIG)
  config = load_module(CONFIGS / "tiny.py").get_config()
  # The smallest study the runner allows: two classes of 20 synthetic training images (subset: 2 per class),
  # one resampled set, one classifier epoch of one batch; the method's own setting through its config argument.
  config.method_configs.numbered_prompt = load_module(tmp_path / "numbered_prompt.py").get_config("tiny,images_per_class=2")
  config.methods = "baseline_10pct,numbered_prompt"
  config.data.wnids = (GOLDFISH, ORANGE)
  config.data.synthetic.train_per_class = 20
  config.data.synthetic.val_per_class = 2
  config.n_resamples = 1
  config.classifier.schedule.max_epochs = 1
  config.classifier.global_batch_size = config.classifier.eval_batch_size = 4
  config.compilation_cache_dir = str(tmp_path / "jax_cache")  # the second classifier reuses the first's compilation
  lines = []
  runner.run_study(config, tmp_path / "study", log=lines.append)

  stages = [line.split("] ")[1].split(":")[0] for line in lines if line.startswith("[") and "running" in line]
  assert stages == [
    "check",
    "data",
    "models",
    "augment/numbered_prompt",
    "train/baseline_10pct/r0",
    "resample/numbered_prompt",
    "train/numbered_prompt/r0",
    "report",
  ]
  rows = load_augmentation_set(tmp_path / "study" / "augment" / "numbered_prompt")
  assert sorted(r["prompt"] for r in rows) == [
    "Picture 0 of a goldfish.",
    "Picture 0 of a orange.",
    "Picture 1 of a goldfish.",
    "Picture 1 of a orange.",
  ]
  assert {(r["method"], r["prompt_strategy"]) for r in rows} == {("numbered_prompt", "test_numbered_first_lemma")}
  report = json.loads((tmp_path / "study" / "report" / "runs.json").read_text())
  assert [(r["method"], r["display"], r["family"], r["paper_top1_mean"]) for r in report["table1"]] == [
    ("baseline_10pct", "10% ImageNet", "baseline", 57.2),
    ("numbered_prompt", "Numbered prompt", "prompt", None),
  ]
  assert [(r["method"], r["resample"]) for r in report["runs"]] == [("baseline_10pct", 0), ("numbered_prompt", 0)]
  assert "| Numbered prompt | prompt |" in (tmp_path / "study" / "report" / "table1.md").read_text()
