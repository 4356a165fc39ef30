"""Pure parts of retrieval: the gradual-k schedule, the duplicate detector, the aesthetic / NSFW filters
and LAION's aesthetic head, against hand-computed values and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jax_aug.retrieval import filters
from jax_aug.retrieval.aesthetic import AestheticHead, convert_pth, load_aesthetic_head
from jax_aug.retrieval.gradual_k import k_schedule


def test_k_schedule_is_the_papers():
  # 1.4 * 130 = 182 up to 6 * 1.4 * 130 = 1092, one multiple of 182 per step.
  assert k_schedule(130) == [182, 364, 546, 728, 910, 1092]
  # 5.6, 11.2, 16.8, 22.4, 28.0, 33.6 rounded.
  assert k_schedule(4) == [6, 11, 17, 22, 28, 34]
  assert k_schedule(10, k_factor=1.0, max_multiple=2) == [10, 20]


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(images_per_class=0), "images_per_class"),
    (dict(images_per_class=5, k_factor=0.5), "k_factor"),
    (dict(images_per_class=5, max_multiple=0), "max_multiple"),
  ],
)
def test_k_schedule_rejects_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    k_schedule(**kwargs)


def _unit(angle_deg: float) -> list[float]:
  a = np.deg2rad(angle_deg)
  return [np.cos(a), np.sin(a), 0.0]


def test_duplicates_are_connected_components_keeping_the_best_ranked():
  # cos(15 deg) = 0.966 > 0.94 links neighbours 15 degrees apart; cos(30 deg) = 0.866 does not.
  # Ranks 0 (0 deg), 1 (15 deg), 2 (30 deg) form one chain: 2 is far from 0 but linked through 1.
  # Rank 3 (90 deg) is alone; rank 4 (-180 deg... -> 180) alone; rank 5 (91 deg) duplicates rank 3.
  e = np.array([_unit(0), _unit(15), _unit(30), _unit(90), _unit(180), _unit(91)], np.float32)
  reasons = filters.duplicate_reasons(e, 0.94)
  assert reasons == [None, "near-duplicate of rank 0", "near-duplicate of rank 0", None, None, "near-duplicate of rank 3"]
  # A stricter threshold (cos 15 deg = 0.966 < 0.97) unlinks the chain but keeps 1 degree apart linked.
  assert [r is None for r in filters.duplicate_reasons(e, 0.97)] == [True, True, True, True, True, False]
  # The link is strict: similarity equal to the threshold does not link (faiss range_search semantics).
  same = np.array([_unit(0), _unit(0)], np.float32)
  assert filters.duplicate_reasons(same, 1.0) == [None, None]


def test_duplicates_reject_unnormalized_embeddings():
  with pytest.raises(ValueError, match="L2-normalized"):
    filters.duplicate_reasons(np.array([[2.0, 0.0]]))


def test_aesthetic_filter_keeps_scores_of_at_least_five():
  reasons = filters.aesthetic_reasons([5.0, 4.999, None, float("nan"), 7.25])
  assert reasons[0] is None and reasons[4] is None
  assert reasons[1] == "aesthetic score 4.999 < 5.0"
  assert reasons[2] == reasons[3] == "no aesthetic score"


def test_nsfw_flag_filter():
  assert filters.nsfw_flag_reasons(["UNLIKELY", "NSFW", "nsfw", "UNSURE", None]) == [
    None,
    "metadata NSFW flag 'NSFW'",
    "metadata NSFW flag 'nsfw'",
    None,
    None,
  ]
  assert filters.nsfw_flag_reasons(["UNSURE"], unsafe_values=("NSFW", "UNSURE"))[0] is not None


def test_aesthetic_head_matches_pytorch_after_pth_conversion(tmp_path):
  torch.manual_seed(0)
  # The layout of LAION's improved aesthetic predictor (Linear stack with dropout, no activation).
  model = torch.nn.Sequential()
  model.layers = torch.nn.Sequential(
    torch.nn.Linear(16, 12), torch.nn.Dropout(0.2), torch.nn.Linear(12, 4), torch.nn.Dropout(0.1), torch.nn.Linear(4, 1)
  )
  model.eval()
  torch.save(model.state_dict(), tmp_path / "head.pth")
  head = load_aesthetic_head(convert_pth(tmp_path / "head.pth", tmp_path / "head.safetensors"))
  raw = np.random.default_rng(0).standard_normal((7, 16)).astype(np.float32)
  x = raw / np.linalg.norm(raw, axis=1, keepdims=True)
  with torch.no_grad():
    expected = model.layers(torch.from_numpy(x))[:, 0].numpy()
    unnormalised = model.layers(torch.from_numpy(raw))[:, 0].numpy()
  np.testing.assert_allclose(head(x), expected, rtol=1e-5, atol=1e-6)
  # Negative control: the head applied to unnormalised CLIP embeddings is caught.
  assert np.abs(unnormalised - head(x)).max() > 100 * (1e-6 + 1e-5 * np.abs(expected).max())


def test_aesthetic_head_v1_linear_from_npz(tmp_path):
  w = np.array([[1.0, 2.0, -1.0]], np.float32)
  np.savez(tmp_path / "linear.npz", weight=w, bias=np.array([5.0], np.float32))
  head = load_aesthetic_head(tmp_path / "linear.npz")
  # 1*0.6 + 2*0.8 + 5 = 7.2 and -1*1 + 5 = 4
  np.testing.assert_allclose(head(np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])), [7.2, 4.0], rtol=1e-6)


def test_aesthetic_head_refuses_bad_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="aesthetic predictor weights not found"):
    load_aesthetic_head(tmp_path / "missing.safetensors")
  (tmp_path / "head.pth").write_bytes(b"x")
  with pytest.raises(ValueError, match="expected a .safetensors or .npz"):
    load_aesthetic_head(tmp_path / "head.pth")
  np.savez(tmp_path / "conv.npz", **{"conv.weight": np.zeros((1, 2, 3, 3)), "conv.bias": np.zeros(1)})
  with pytest.raises(ValueError, match="2-D weight"):
    load_aesthetic_head(tmp_path / "conv.npz")
  with pytest.raises(ValueError, match="expects embeddings"):
    AestheticHead([(np.ones((1, 3)), np.zeros(1))])(np.ones((2, 4)))
