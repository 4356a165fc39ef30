"""The classifier's PyTorch twin (jax_aug/twin) against our trainer: tiny config, CPU, float32, one device.

Tolerances (stated in docs/twin.md):
- the first 3 steps' train losses agree to 1e-4 relative (measured: <= 1.1e-7);
- after those 3 steps every parameter and BatchNorm statistic tensor agrees to 1e-5 of its largest
  magnitude (measured: 5e-7). For the tiny network float32 suffices; ResNet-50's ill-conditioned float32
  gradients need float64 (tests/test_classifier_torch_equivalence.py), which the twin does not use;
- over a short full run (5 epochs x 5 steps) both reach a best validation top-1 >= 50% (4 classes, chance
  25%) and differ by at most 2 of the 32 validation images (6.25 points), and so do the final test top-1s.
Negative controls: weight decay on kernels only in the twin (the common "no decay on BN and biases"
variant, a realistic mismatch) leaves the losses within 1e-4 but moves the parameters beyond 1e-5; images
fed with height and width swapped move the first loss beyond 1e-4.
"""

import shutil

import jax
import numpy as np
import pytest
import torch
import torchvision
from conftest import REPO_ROOT
from PIL import Image

# The classifier trainer's test data (synthetic 4-class ImageNet) and its tiny config.
from test_classifier_train import WNIDS, manifests, tiny_config  # noqa: F401  (manifests is a fixture)

from jax_aug import io, sharding
from jax_aug.classifier import model as model_lib
from jax_aug.classifier import port, steps, train
from jax_aug.data import pipeline, subsets
from jax_aug.study import runner as study_runner
from jax_aug.study import wiring
from jax_aug.study.config_files import load_module
from jax_aug.twin import classifier as twin
from jax_aug.twin import report, run

LOSS_RTOL = 1e-4
PARAM_RTOL = 1e-5
TOP1_BAND = 100.0 * 2 / 32  # two of the 32 validation images
CPU = torch.device("cpu")


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
  return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-6))


def batches(config, records, n=3):
  loader = train.train_loader(records, wnids=WNIDS, epoch=0, config=config, process_index=0, process_count=1)
  return [batch for _, batch in zip(range(n), loader)]


def our_steps(config, batches_):
  """Our jitted train step on `batches_`: (losses, the variables after them as a torchvision state_dict)."""
  mesh = sharding.make_mesh()
  model = model_lib.build_model(config.model, num_classes=len(WNIDS))
  tx = steps.make_optimizer(config.optimizer)
  state = train.initial_state(config, model, tx, mesh)
  train_step = steps.jit_train_step(model, tx, mesh)
  losses = []
  for batch in batches_:
    state, metrics = train_step(state, sharding.global_batch({"image": batch["image"], "label": batch["label"]}, mesh))
    losses.append(float(metrics["loss"]))
  return np.array(losses), port.flax_to_torch(jax.device_get(state.variables()))


def twin_steps(config, batches_, *, optimizer_config=None, swap_height_width=False):
  """The twin's train step on the same batches: (losses, its state_dict after them)."""
  variables = twin.initial_variables(config, len(WNIDS))
  model_t = twin.build_model(config.model, len(WNIDS), variables)
  optimizer_t = twin.make_optimizer(model_t, optimizer_config or config.optimizer, variables)
  losses = []
  for batch in batches_:
    images = twin.to_tensor(batch["image"], CPU)
    if swap_height_width:
      images = images.transpose(2, 3).contiguous()
    loss, _ = twin.train_step(model_t, optimizer_t, images, torch.from_numpy(batch["label"]).long())
    losses.append(float(loss))
  return np.array(losses), {k: v.numpy() for k, v in model_t.state_dict().items()}


def worst_error(ours: dict, reference: dict) -> float:
  """The largest relative error over all parameter and BN statistic tensors."""
  return max(relative_error(v, reference[k]) for k, v in ours.items() if "num_batches" not in k)


def test_config_resnet50_is_torchvision_resnet50():
  """The twin's network for ResNet-50's stage sizes is torchvision's resnet50: same state_dict entries and
  shapes, and the same eval and train outputs with the same weights."""
  ours = twin.ConfigResNet((3, 4, 6, 3), 64, num_classes=10)
  torch.manual_seed(0)
  reference = torchvision.models.resnet50(num_classes=10)
  assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
  ours.load_state_dict(reference.state_dict())
  x = torch.randn(2, 3, 64, 64)
  for mode in ("eval", "train"):
    getattr(ours, mode)()
    getattr(reference, mode)()
    with torch.no_grad():
      torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_twin_network_has_our_initial_weights(manifests):
  """Flax init -> port -> twin: the twin's eval logits equal ours at step 0 (float32, 1e-5 of scale)."""
  config = tiny_config(manifests)
  variables = twin.initial_variables(config, len(WNIDS))
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)  # a loader's pixels
  ours = model_lib.build_model(config.model, len(WNIDS)).apply(variables, pipeline.normalize(images), train=False)
  model_t = twin.build_model(config.model, len(WNIDS), variables).eval()
  with torch.no_grad():
    theirs = model_t(twin.to_tensor(images, CPU)).numpy()
  assert relative_error(np.asarray(ours), theirs) <= 1e-5


def test_weight_decay_groups_follow_our_mask(manifests):
  config = tiny_config(manifests)
  variables = twin.initial_variables(config, len(WNIDS))
  model_t = twin.build_model(config.model, len(WNIDS), variables)
  names = {id(p): k for k, p in model_t.named_parameters()}
  for applies_to, expect_decayed in (
    ("all", lambda k: True),
    ("kernels", lambda k: k.endswith("weight") and "bn" not in k and "downsample.1" not in k),
  ):
    config.optimizer.weight_decay_applies_to = applies_to
    optimizer = twin.make_optimizer(model_t, config.optimizer, variables)
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 1e-4 for p in g["params"]}
    assert decayed == {k for k in names.values() if expect_decayed(k)}, applies_to
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(names)


@pytest.mark.slow
def test_first_three_steps_match(manifests):
  config = tiny_config(manifests)
  inputs = batches(config, subsets.read_manifest(manifests["train"]))
  ours, our_state = our_steps(config, inputs)
  theirs, their_state = twin_steps(config, inputs)
  np.testing.assert_allclose(ours, theirs, rtol=LOSS_RTOL)
  assert ours[0] > 1.0  # a real loss (ln 4 = 1.39 at init), not a degenerate zero
  assert worst_error(our_state, their_state) <= PARAM_RTOL

  # Negative controls: a realistic recipe mismatch the parameter check catches (the losses cannot yet),
  # and a layout bug the loss check catches at the first step.
  kernels_only = config.optimizer.copy_and_resolve_references()
  kernels_only.weight_decay_applies_to = "kernels"
  theirs, their_state = twin_steps(config, inputs, optimizer_config=kernels_only)
  np.testing.assert_allclose(ours, theirs, rtol=LOSS_RTOL)
  assert worst_error(our_state, their_state) > PARAM_RTOL
  theirs, _ = twin_steps(config, inputs, swap_height_width=True)
  assert abs(ours[0] - theirs[0]) / theirs[0] > LOSS_RTOL


@pytest.fixture(scope="module")
def twin_run(manifests, tmp_path_factory):
  """train_classifier.py --twin=torch's function on the tiny config: 5 epochs x 5 steps in each framework."""
  config = tiny_config(manifests, max_epochs=5)
  workdir = tmp_path_factory.mktemp("twin_run")
  return config, workdir, run.train_with_twin(config, workdir)


@pytest.mark.slow
def test_short_run_with_twin_and_report(manifests, twin_run):
  """Both runs, both metric streams in one format, both learn to within the band, the report."""
  config, tmp_path, out = twin_run
  ours_dir, twin_dir = tmp_path, tmp_path / run.TWIN_DIR
  ours, theirs = report.load_run(ours_dir), report.load_run(twin_dir)

  # The same metric format, the same schedule.
  assert [set(r) for r in ours["epochs"]] == [set(r) for r in theirs["epochs"]]
  assert len(ours["epochs"]) == len(theirs["epochs"]) == 5
  assert [r["learning_rate"] for r in ours["epochs"]] == [r["learning_rate"] for r in theirs["epochs"]]
  # The production loggers' first steps (20 logged, 5 per epoch) agree step for step.
  assert [r["step"] for r in ours["steps"]] == [r["step"] for r in theirs["steps"]] == list(range(20))
  np.testing.assert_allclose(
    [r["loss"] for r in ours["steps"][:3]], [r["loss"] for r in theirs["steps"][:3]], rtol=LOSS_RTOL
  )
  # Both learn, to within the band of each other.
  best = [max(r["validation_top1"] for r in run_["epochs"]) for run_ in (ours, theirs)]
  assert min(best) >= 50.0, best
  assert abs(best[0] - best[1]) <= TOP1_BAND, best
  assert abs(out["ours"]["top1"] - out["twin"]["top1"]) <= TOP1_BAND
  assert out["twin"]["eval_split"] == "test" and out["twin"]["num_eval_images"] == 32

  # The report: both final top-1s, the divergence statement, and a figure holding both runs' curves.
  text = (tmp_path / report.REPORT_FILE).read_text()
  assert f"| ours (JAX) | {out['ours']['top1']:.2f} |" in text
  assert f"| twin (PyTorch) | {out['twin']['top1']:.2f} |" in text
  assert "Where and why they diverge" in text and "reduction order" in text
  with Image.open(tmp_path / report.FIGURE_FILE) as png:
    assert png.format == "PNG" and png.size == (1100, 800)
  figure = report.make_figure(ours, theirs, report.compare(ours, theirs))
  train_loss, validation, learning_rate, step_difference = figure.axes
  for ax, field in ((train_loss, "train_loss"), (validation, "validation_top1"), (learning_rate, "learning_rate")):
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines == {
      "ours (JAX)": [r[field] for r in ours["epochs"]],
      "twin (PyTorch)": [r[field] for r in theirs["epochs"]],
    }
  assert len(step_difference.get_lines()[0].get_xdata()) == 20

  # A finished twin is not retrained; a twin dir of another config is refused.
  assert run.train_with_twin(config, tmp_path)["twin"] == out["twin"]
  other = tiny_config(manifests, max_epochs=4)
  with pytest.raises(ValueError, match="different config"):
    twin.train_and_evaluate(other, twin_dir, train.load_run_data(other, tmp_path))


def _study_config(**overrides):
  config = load_module(REPO_ROOT / "configs" / "tiny.py").get_config()
  config.update(overrides)
  return config


@pytest.mark.slow
def test_study_twin_stage_reproduces_the_twin(twin_run, tmp_path):
  """config.twin_methods adds stage twin/<method> after the report, fed by train/<method>/r0; its function
  rebuilds the run's config from config.json and retrains the same twin (CPU PyTorch is deterministic)."""
  _, run_dir, out = twin_run
  stages = study_runner.plan(_study_config(methods="baseline_10pct", twin_methods="baseline_10pct"), tmp_path)
  assert [s.name for s in stages][-2:] == ["report", "twin/baseline_10pct"]
  stage = stages[-1]
  assert stage.upstream == ("train/baseline_10pct/r0",)
  shutil.copytree(
    run_dir,
    tmp_path / "train" / "baseline_10pct" / "r0" / wiring.CLASSIFIER_DIR,
    ignore=shutil.ignore_patterns(run.TWIN_DIR, "twin_report.*"),
  )
  stage.fn(tmp_path / "twin" / "baseline_10pct")
  twin_dir = tmp_path / "twin" / "baseline_10pct"
  assert io.read_json(twin_dir / run.TWIN_DIR / train.RESULTS_FILE) == out["twin"]
  assert (twin_dir / report.REPORT_FILE).is_file() and (twin_dir / report.FIGURE_FILE).is_file()

  assert [s.name for s in study_runner.plan(_study_config(methods="baseline_10pct"), tmp_path)][-1] == "report"
  with pytest.raises(ValueError, match=r"twin_methods names \['retrieval'\], which config.methods='baseline_10pct'"):
    study_runner.plan(_study_config(methods="baseline_10pct", twin_methods="retrieval"), tmp_path)


@pytest.mark.slow
def test_interrupted_twin_resumes_identically(manifests, tmp_path, monkeypatch):
  """A twin stopped inside epoch 2 and restarted ends with the metrics and results of an uninterrupted one
  (momentum buffers, schedule and best checkpoint restored)."""
  config = tiny_config(manifests, max_epochs=3)
  data = train.load_run_data(config, tmp_path)
  reference = twin.train_and_evaluate(config, tmp_path / "uninterrupted", data)

  real_epoch = twin._train_epoch  # pylint: disable=protected-access

  def crash_in_epoch_2(*args, epoch, **kwargs):
    if epoch == 2:
      raise KeyboardInterrupt("simulated kill in epoch 2")
    return real_epoch(*args, epoch=epoch, **kwargs)

  monkeypatch.setattr(twin, "_train_epoch", crash_in_epoch_2)
  with pytest.raises(KeyboardInterrupt):
    twin.train_and_evaluate(config, tmp_path / "resumed", data)
  assert not (tmp_path / "resumed" / train.RESULTS_FILE).exists()
  monkeypatch.setattr(twin, "_train_epoch", real_epoch)
  resumed = twin.train_and_evaluate(config, tmp_path / "resumed", data)
  assert resumed == reference

  def rows(name):
    return [
      {k: v for k, v in r.items() if k not in ("train_seconds", "train_images_per_second")}
      for r in io.JsonlManifest(tmp_path / name / train.METRICS_FILE).read()
    ]

  assert rows("resumed") == rows("uninterrupted")
  assert (
    io.JsonlManifest(tmp_path / "resumed" / train.STEP_LOSSES_FILE).read()
    == io.JsonlManifest(tmp_path / "uninterrupted" / train.STEP_LOSSES_FILE).read()
  )
