"""CLIP tokenizer assets, the tiny SD builder and load_sd (layouts, dtypes, errors)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_aug.diffusion.loading import NotADiffusersLayoutError, load_clip_tokenizer, load_sd
from jax_aug.diffusion.tiny import build_tiny_sd


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
  return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny", seed=0)


def test_clip_tokenizer_ids_match_protocol():
  tokenizer = load_clip_tokenizer()
  assert len(tokenizer) == 49408
  # PROTOCOL.md: a=320, photo=1125, cat=2368; <|startoftext|>=49406, <|endoftext|>=49407.
  ids = tokenizer("a photo of a cat").input_ids
  assert ids[0] == 49406 and ids[-1] == 49407
  assert ids[1:3] == [320, 1125] and ids[-2] == 2368
  padded = tokenizer("a cat", padding="max_length", max_length=tokenizer.model_max_length).input_ids
  assert len(padded) == 77 and padded[-1] == 49407


def test_tokenizer_assets_are_what_the_script_builds():
  import scripts.make_clip_tokenizer as script  # the script's pure vocabulary builder
  from jax_aug.diffusion.loading import CLIP_TOKENIZER_DIR as folder

  merges = [tuple(line.split()) for line in (folder / "merges.txt").read_text().splitlines()[1:]]
  assert len(merges) == 48894
  assert json.loads((folder / "vocab.json").read_text()) == script.build_vocab(merges)


def test_tiny_sd_roundtrip_float32_and_bfloat16(tiny_sd):
  from diffusers import FlaxPNDMScheduler, FlaxUNet2DConditionModel

  model = load_sd(tiny_sd)
  assert isinstance(model.unet, FlaxUNet2DConditionModel)
  assert isinstance(model.scheduler, FlaxPNDMScheduler)
  assert model.scheduler.config.steps_offset == 1 and model.scheduler.config.skip_prk_steps
  assert model.resolution == 32 and model.checkpoint == str(tiny_sd)
  assert model.safety_checker is not None and model.params["safety_checker"] is not None
  # Independent reader: diffusers' own per-component loader.
  _, unet_params = FlaxUNet2DConditionModel.from_pretrained(tiny_sd / "unet")
  for a, b in zip(jax.tree.leaves(model.params["unet"]), jax.tree.leaves(unet_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  half = load_sd(tiny_sd, dtype="bfloat16")
  for name in ("unet", "vae", "text_encoder"):
    assert {x.dtype for x in jax.tree.leaves(half.params[name])} == {jnp.dtype(jnp.bfloat16)}, name
  assert half.unet.dtype == jnp.bfloat16


def test_missing_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="weight directory not found"):
    load_sd(tmp_path / "nope")


def test_not_a_diffusers_directory(tmp_path, tiny_sd):
  with pytest.raises(NotADiffusersLayoutError, match="no model_index.json"):
    load_sd(tmp_path)
  (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "X", "unet": ["diffusers", "U"]}))
  with pytest.raises(NotADiffusersLayoutError, match="tokenizer"):
    load_sd(tmp_path)
  with pytest.raises(ValueError, match="unknown dtype 'float16'"):
    load_sd(tiny_sd, dtype="float16")


def test_build_refuses_non_empty_directory(tmp_path):
  (tmp_path / "keep.txt").write_text("x")
  with pytest.raises(FileExistsError, match="non-empty"):
    build_tiny_sd(tmp_path)
  assert (tmp_path / "keep.txt").read_text() == "x"
