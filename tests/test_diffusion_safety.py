"""SD's safety checker flags: a tiny checker whose concept embeddings are set to fire on known images flags
exactly those images, equal to diffusers' PyTorch StableDiffusionSafetyChecker with the same weights on the
same uint8 images (PIL + CLIP image processor, as the PyTorch pipeline runs it); the engine, running that
checker, replaces a flagged image by the next attempt's sample, deterministically, counts it in the
manifest and metrics, and stops with a clear error at the attempt cap.

Construction: image embeddings e_i of the known images by the PyTorch checker; concept 0 = the least-norm
direction orthogonal to every other known image's embedding (pinv), with its threshold halfway between the
target's cosine and the largest other one; a special-care concept on a second image s, and concept 1 on s with a
threshold 0.005 above s's
cosine, so s is flagged only through the special-care adjustment (+0.01) of both implementations. The
other 15 concepts and 2 special-care rows keep the checker's own init (ones; cosine <= 1, never fire).
"""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from jax_aug.diffusion import engine, methods, tiny
from jax_aug.diffusion.loading import load_sd
from jax_aug.diffusion.safety import make_safety_fn
from jax_aug.io import JsonlManifest

SETTINGS = engine.SamplerSettings(num_inference_steps=3)
WNIDS = ("n01443537", "n01491361")
pytestmark = pytest.mark.slow  # the checker's PT->Flax conversion and the known images: ~40 s of setup
TARGET, SPECIAL = 1, 3  # request positions whose attempt-0 images the checker is made to flag


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """The tiny Flax SD, a PyTorch checker converted into Flax (from_pt), and the known images: the engine's
  attempt-0 samples of four requests (one batch of 4) and the attempt-1 samples of TARGET and SPECIAL, generated
  as the engine's replacement round generates them (a batch of 2)."""
  from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
  from diffusers.pipelines.stable_diffusion.safety_checker_flax import FlaxStableDiffusionSafetyChecker

  model = load_sd(tiny.build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny", seed=0))
  torch.manual_seed(0)
  reference = StableDiffusionSafetyChecker(tiny.safety_clip_config()).eval()
  path = tmp_path_factory.mktemp("checker")
  reference.save_pretrained(path, safe_serialization=False)
  checker = FlaxStableDiffusionSafetyChecker.from_pretrained(path, from_pt=True)
  params = checker.params
  requests = methods.build_requests("prompt", prompt_strategy="clip_templates", wnids=WNIDS, images_per_class=2, seed=0)
  sampler = engine.get_sampler(model, SETTINGS)
  first = engine.generate_batch(sampler, requests, [0] * 4, seed=0)
  replacements = engine.generate_batch(sampler, [requests[TARGET], requests[SPECIAL]], [1, 1], seed=0)
  return model, reference, checker, params, requests, first, replacements


def _pixels(model, images):
  """The PyTorch pipeline's safety input: PIL images through the checkpoint's CLIP image processor."""
  return model.feature_extractor([Image.fromarray(x) for x in images], return_tensors="pt").pixel_values


def _fire_on(reference, model, images, target, special):
  """Sets concept / special-care embeddings and thresholds of the PyTorch checker so it flags images
  `target` (directly) and `special` (through the special-care adjustment); returns the Flax parameters."""
  with torch.no_grad():
    embeds = reference.visual_projection(reference.vision_model(_pixels(model, images))[1])
    unit = torch.nn.functional.normalize(embeds, dim=-1)

    def concept(i):
      # The least-norm d with unit @ d = one-hot(i): orthogonal to every other known image, so image i stands
      # apart however alike the tiny model's images are (its own direction minus the mean was not enough).
      direction = torch.linalg.pinv(unit)[:, i]
      cos = unit @ torch.nn.functional.normalize(direction, dim=0)
      others = torch.cat([cos[:i], cos[i + 1 :]])
      assert cos[i] - others.max() > 0.02, "known images too alike to separate"  # checks the construction
      return direction, cos

    target_dir, target_cos = concept(target)
    special_dir, special_cos = concept(special)
    reference.concept_embeds[0] = target_dir
    reference.concept_embeds_weights[0] = (
      target_cos[target] + torch.cat([target_cos[:target], target_cos[target + 1 :]]).max()
    ) / 2
    others = torch.cat([special_cos[:special], special_cos[special + 1 :]])
    reference.special_care_embeds[0] = special_dir
    reference.special_care_embeds_weights[0] = (special_cos[special] + others.max()) / 2
    reference.concept_embeds[1] = special_dir
    reference.concept_embeds_weights[1] = special_cos[special] + 0.005  # fires only with the +0.01
  names = ("concept_embeds", "concept_embeds_weights", "special_care_embeds", "special_care_embeds_weights")
  return {name: getattr(reference, name).detach().numpy().copy() for name in names}


def _with_checker(model, checker, params):
  return dataclasses.replace(model, safety_checker=checker, params={**model.params, "safety_checker": params})


def _reference_flags(reference, model, images):
  with torch.no_grad():
    _, flags = reference(_pixels(model, images), [np.zeros(1)] * len(images))
  return np.array(flags)


def test_checker_flags_the_known_images_as_pytorch_does(setup):
  model, reference, checker, params, _, first, replacements = setup
  images = np.concatenate([first, replacements])
  # With the checker's own init (ones) nothing fires, on both sides.
  untouched = make_safety_fn(_with_checker(model, checker, params))(images)
  assert not untouched.any() and not _reference_flags(reference, model, images).any()

  concepts = _fire_on(reference, model, images, TARGET, SPECIAL)
  ours = make_safety_fn(_with_checker(model, checker, {**params, **concepts}))(images)
  expected = np.zeros(len(images), bool)
  expected[[TARGET, SPECIAL]] = True
  np.testing.assert_array_equal(_reference_flags(reference, model, images), expected)
  np.testing.assert_array_equal(ours, expected)
  # Negative control: without the special-care adjustment (thresholds of the special concept 0.01 higher,
  # i.e. a checker that ignores special care) image SPECIAL would pass: the test sees that rule.
  weights = concepts["concept_embeds_weights"].copy()
  weights[1] += 0.01
  lenient = {**concepts, "concept_embeds_weights": weights}
  flags = make_safety_fn(_with_checker(model, checker, {**params, **lenient}))(images)
  assert not flags[SPECIAL] and flags[TARGET]


def test_engine_replaces_flagged_images_with_the_next_attempt(setup, tmp_path):
  model, reference, checker, params, requests, first, replacements = setup
  concepts = _fire_on(reference, model, np.concatenate([first, replacements]), TARGET, SPECIAL)
  replacement = {TARGET: replacements[0], SPECIAL: replacements[1]}
  flagging = _with_checker(model, checker, {**params, **concepts})
  for run in ("a", "b"):  # twice: the same files, bit for bit
    engine.sample_requests(
      flagging, requests, tmp_path / run, method="clip_prompts", settings=SETTINGS, seed=0, batch_size=4
    )  # the model's own checker (safety_fn=None)
  rows = {r["key"]: r for r in JsonlManifest(tmp_path / "a" / "manifest.jsonl").read()}
  for i, request in enumerate(requests):
    row = rows[request.key]
    replaced = i in (TARGET, SPECIAL)
    assert (row["attempt"], row["safety_rejections"]) == (int(replaced), int(replaced))
    image = np.asarray(Image.open(tmp_path / "a" / row["path"]))
    np.testing.assert_array_equal(image, replacement[i] if replaced else first[i])
    assert (tmp_path / "b" / row["path"]).read_bytes() == (tmp_path / "a" / row["path"]).read_bytes()
  assert JsonlManifest(tmp_path / "a" / engine.METRICS_FILE).read()[0]["flagged"] == 2

  with pytest.raises(RuntimeError, match=f"{requests[TARGET].key}: the safety checker flagged all 1 attempts"):
    engine.sample_requests(
      flagging, requests, tmp_path / "capped", method="clip_prompts", settings=SETTINGS, seed=0, batch_size=4, max_attempts=1
    )
