"""CLIP queries and image embeddings in JAX equal transformers' PyTorch CLIPModel on the same (tiny,
random) weights, with the real CLIP tokenizer; the index builder writes clip-retrieval's layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jax_aug.data.imagenet_classes import class_by_wnid
from jax_aug.data.prompts import build_prompt
from jax_aug.retrieval import clip_model
from jax_aug.retrieval.builder import build_index
from jax_aug.retrieval.index import LocalIndex


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A tiny random PyTorch CLIPModel saved as a model folder, and our JAX model converted from it."""
  import torch
  from transformers import CLIPModel

  torch.manual_seed(3)
  reference = CLIPModel(clip_model.tiny_clip_config()).eval()
  folder = tmp_path_factory.mktemp("tiny_clip")
  reference.save_pretrained(folder, safe_serialization=False)
  template = clip_model.build_tiny_clip(seed=0)
  template.tokenizer.save_pretrained(folder)
  template.image_processor.save_pretrained(folder)
  return clip_model.load_clip(str(folder), from_pt=True), folder, reference


@pytest.mark.slow  # first user of the module fixture: PyTorch -> Flax conversion and CLIP compilation
def test_text_and_image_features_match_pytorch(tiny):
  import torch

  clip, folder, reference = tiny
  prompts = [build_prompt("simple_no_ws", class_by_wnid(w), 0, 0) for w in ("n01443537", "n03180011")]
  assert prompts[1] == "A photo of desktopcomputer."
  ours = clip_model.embed_texts(clip, prompts, batch_size=4)
  tokens = clip.tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt")
  with torch.no_grad():
    expected = reference.get_text_features(**tokens)
  expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
  np.testing.assert_allclose(ours, expected, atol=2e-5)
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
  # Negative control: pooling the first token (<|startoftext|>) instead of the EOS token is caught.
  with torch.no_grad():
    first_token = reference.text_projection(reference.text_model(**tokens).last_hidden_state[:, 0])
  first_token = torch.nn.functional.normalize(first_token, dim=-1).numpy()
  assert np.abs(first_token - ours).max() > 100 * 2e-5

  rng = np.random.default_rng(0)
  images = [
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), np.uint8)),
    Image.fromarray(rng.integers(0, 256, (64, 32, 3), np.uint8)),
  ]
  ours = clip_model.embed_images(clip, images, batch_size=4)
  pixels = clip.image_processor(images=images, return_tensors="pt")["pixel_values"]
  with torch.no_grad():
    unnormalised = reference.get_image_features(pixel_values=pixels)
  expected = torch.nn.functional.normalize(unnormalised, dim=-1).numpy()
  np.testing.assert_allclose(ours, expected, atol=2e-5)
  # Negative control: features without the L2 normalisation are caught.
  assert np.abs(unnormalised.numpy() - ours).max() > 100 * 2e-5


def test_load_clip_refuses_a_missing_folder(tiny):
  _, folder, _ = tiny
  with pytest.raises(FileNotFoundError, match="cannot load a CLIP model"):
    clip_model.load_clip(str(folder / "missing"))


def test_builder_writes_clip_retrieval_layout(tiny, tmp_path):
  clip, _, _ = tiny
  rng = np.random.default_rng(1)
  collection = []
  for i in range(5):
    Image.fromarray(rng.integers(0, 256, (36, 36, 3), np.uint8)).save(tmp_path / f"{i}.png")
    collection.append({"image_path": f"{i}.png", "caption": f"image {i}", "url": f"http://x/{i}"})
  folder = build_index(tmp_path / "index", clip, collection, image_root=tmp_path, batch_size=2)
  assert (folder / "image.index").is_file() and sorted(p.name for p in (folder / "metadata").iterdir()) == ["00000.parquet"]
  index = LocalIndex(folder, columns=["image_path", "caption", "url"])
  # Each image's own embedding finds itself first, with cosine 1.
  own = clip_model.embed_images(clip, [Image.open(tmp_path / "3.png")])[0]
  best = index.search(own, 1, deduplicate=False)[0]
  assert best.id == 3 and best.similarity == pytest.approx(1.0, abs=1e-5)
  assert best.metadata == {"image_path": "3.png", "caption": "image 3", "url": "http://x/3"}
  with pytest.raises(ValueError, match="L2-normalized"):
    index.search(own * 2, 1, deduplicate=False)
  with pytest.raises(ValueError, match="image_path"):
    build_index(tmp_path / "bad", clip, [{"caption": "x"}], image_root=tmp_path)
  with pytest.raises(FileNotFoundError, match="no image.index"):
    LocalIndex(tmp_path)
