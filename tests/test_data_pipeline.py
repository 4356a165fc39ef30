"""grain pipelines: transforms against torchvision, loaders over both sources with 2 workers, exactly-once
epochs, invariance to worker and host counts, bad records."""

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from jax_aug.data import pipeline, sources
from jax_aug.data.synthetic import DEFAULT_WNIDS, make_synthetic_imagenet

TRAIN, VAL, BATCH, SIZE = 16, 6, 16, 24
WNIDS = list(DEFAULT_WNIDS)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  return make_synthetic_imagenet(
    tmp_path_factory.mktemp("synthetic"), train_per_class=TRAIN, val_per_class=VAL, image_size=40, seed=0, tfds=True
  )


def _records(synthetic, source, split):
  if source == "folder":
    return sources.folder_records(synthetic / split)
  return sources.tfds_records(synthetic / "tfds", {"train": "train", "val": "validation"}[split])


def _image(seed, width, height):
  return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _crop_one_row_low(size):
  """torchvision's CenterCrop with an off-by-one row offset: the eval test's negative control."""
  return lambda im: TF.crop(im, int(round((im.height - size) / 2.0)) + 1, int(round((im.width - size) / 2.0)), size, size)


def _torchvision_eval(image, size, crop=T.CenterCrop):
  tv = T.Compose(
    [T.Resize(int(size / 0.875)), crop(size), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
  )
  return tv(image).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("width,height,size", [(50, 37, 24), (37, 50, 24), (40, 40, 32), (500, 375, 224)])
def test_eval_transform_matches_torchvision(width, height, size):
  image = _image(width * height, width, height)
  ours = pipeline.normalize(pipeline.eval_transform(image, size, 0.875))
  np.testing.assert_allclose(ours, _torchvision_eval(image, size), atol=1e-5)
  # Negative control: the centre crop one row too low is caught.
  assert np.abs(ours - _torchvision_eval(image, size, _crop_one_row_low)).max() > 1000 * 1e-5


def test_resized_crop_matches_torchvision():
  image = _image(1, 64, 48)
  for box, flip in [((3, 5, 30, 40), False), ((0, 0, 48, 64), True), ((10, 20, 7, 9), True)]:
    reference = TF.resized_crop(image, *box, [24, 24], T.InterpolationMode.BILINEAR)
    if flip:
      reference = TF.hflip(reference)
    assert np.array_equal(pipeline.resized_crop(image, box, 24, flip), np.asarray(reference))


def test_random_resized_crop_box_follows_torchvision():
  # No try fits a 1000x10 image: both fall back to the same centre crop with aspect clamped to 4/3.
  rng = np.random.default_rng(0)
  wide = pipeline.random_resized_crop_box(rng, 1000, 10)
  assert wide == tuple(T.RandomResizedCrop.get_params(_image(0, 1000, 10), (0.08, 1.0), (3 / 4, 4 / 3)))
  assert wide == (0, 493, 10, 13)
  # The distribution of area fraction and aspect matches torchvision's sampler on a typical image.
  n, width, height = 4000, 500, 375
  ours = np.array([pipeline.random_resized_crop_box(rng, width, height) for _ in range(n)], float)
  torch.manual_seed(0)
  image = _image(0, width, height)
  theirs = np.array([T.RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)], float)
  for boxes in (ours, theirs):
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= height).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= width).all()

  def stats(boxes):
    area = boxes[:, 2] * boxes[:, 3] / (width * height)
    return area.mean(), np.log(boxes[:, 3] / boxes[:, 2]).mean(), (boxes[:, 0] + boxes[:, 2] / 2).mean()

  np.testing.assert_allclose(stats(ours), stats(theirs), atol=0.02 * height)
  np.testing.assert_allclose(stats(ours)[:2], stats(theirs)[:2], atol=0.02)


def test_colour_jitter_matches_torchvision_for_given_factors_and_order():
  image = _image(2, 24, 24)
  for order, factors, hue in [((0, 1, 2, 3), (0.6, 1.4, 0.7), 0.1), ((3, 2, 1, 0), (1.3, 0.8, 1.4), -0.07)]:
    reference = image
    for op in order:
      adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)[op]
      reference = adjust(reference, hue if op == 3 else factors[op])
    ours = pipeline.jitter_colours(image, order, factors, hue)
    assert np.array_equal(np.asarray(ours), np.asarray(reference)), order
    # Negative control: the order matters (contrast's mean moves with the brightness before it).
    assert not np.array_equal(np.asarray(pipeline.jitter_colours(image, order[::-1], factors, hue)), np.asarray(ours))
  assert np.array_equal(np.asarray(pipeline.grayscale(image)), np.asarray(TF.rgb_to_grayscale(image, 3)))


def test_photometric_augmentation_draws_torchvisions_distribution_and_is_off_by_default():
  image, rng = _image(3, 32, 32), np.random.default_rng(0)
  # Off (the paper's recipe): the crop and flip of a seed are what they were without the option.
  plain = pipeline.train_transform(image, np.random.default_rng(5), 24, (0.08, 1.0), (3 / 4, 4 / 3))
  box = pipeline.random_resized_crop_box(np.random.default_rng(5), 32, 32)
  flip = np.random.default_rng(5)
  pipeline.random_resized_crop_box(flip, 32, 32)
  assert np.array_equal(plain, pipeline.resized_crop(image, box, 24, flip.random() < 0.5))
  assert not pipeline.Photometric().active
  # On: grayscale with p 0.2 and jitter with p 0.8 (torchvision: RandomApply([ColorJitter], p), RandomGrayscale(p)).
  photometric = pipeline.Photometric((0.4, 0.4, 0.4, 0.1), 0.8, 0.2)
  outs = [np.asarray(pipeline.photometric_transform(image, rng, photometric)).astype(int) for _ in range(2000)]
  gray = np.mean([(o[..., 0] == o[..., 1]).all() and (o[..., 1] == o[..., 2]).all() for o in outs])
  unchanged = np.mean([np.array_equal(o, np.asarray(image)) for o in outs])
  assert abs(gray - 0.2) < 0.03 and abs(unchanged - 0.2 * 0.8) < 0.03, (gray, unchanged)
  # Brightness alone: the mean scales by a factor uniform in [0.6, 1.4], as torchvision's ColorJitter(0.4) draws.
  bright, dark = pipeline.Photometric((0.4, 0.0, 0.0, 0.0)), Image.fromarray(np.asarray(image) // 3)  # no clipping
  ratios = [
    np.asarray(pipeline.photometric_transform(dark, rng, bright)).mean() / np.asarray(dark).mean() for _ in range(2000)
  ]
  assert 0.58 < min(ratios) < 0.62 and 1.3 < max(ratios) < 1.42 and abs(np.mean(ratios) - 1.0) < 0.02
  for bad, named in [
    ({"color_jitter": (0.4, 0.4, 0.4)}, "color_jitter=(0.4, 0.4, 0.4): expected 4"),
    ({"color_jitter": (0, 0, 0, 0.6)}, "hue at most 0.5"),
    ({"grayscale_p": 1.5}, "grayscale_p=1.5: expected a probability"),
  ]:
    with pytest.raises(ValueError, match=re.escape(named)):
      pipeline.Photometric(**bad)


@pytest.mark.parametrize("source", ["folder", "tfds"])
def test_loaders_with_two_workers(synthetic, source):
  tfds_dir = str(synthetic / "tfds") if source == "tfds" else None
  train = _records(synthetic, source, "train")
  assert len(train) == TRAIN * len(WNIDS) and len(train) % BATCH == 0
  orders = []
  for epoch in (0, 1):
    batches = list(
      pipeline.make_train_loader(
        train,
        wnids=WNIDS,
        epoch=epoch,
        seed=0,
        global_batch_size=BATCH,
        image_size=SIZE,
        num_workers=2,
        tfds_data_dir=tfds_dir,
        process_index=0,
        process_count=1,
      )
    )
    assert len(batches) == len(train) // BATCH
    for batch in batches:
      # uint8 pixels: the jitted steps normalise on the device (4x fewer bytes through the workers).
      assert batch["image"].shape == (BATCH, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
      assert batch["label"].shape == (BATCH,) and batch["label"].dtype == np.int32
      assert batch["mask"].all()
      assert [WNIDS[label] for label in batch["label"]] == [train[i]["wnid"] for i in batch["index"]]
    order = np.concatenate([b["index"] for b in batches])
    assert sorted(order) == list(range(len(train)))  # every training example exactly once per epoch
    orders.append(order)
  assert not np.array_equal(*orders)  # a new order each epoch

  val = _records(synthetic, source, "val")
  reader = sources.ImageReader(tfds_dir)
  batches = list(
    pipeline.make_eval_loader(
      val,
      wnids=WNIDS,
      batch_size=BATCH,
      image_size=SIZE,
      num_workers=2,
      tfds_data_dir=tfds_dir,
      process_index=0,
      process_count=1,
    )
  )
  assert len(batches) == math.ceil(len(val) / BATCH)
  mask = np.concatenate([b["mask"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])
  assert mask.sum() == len(val) and list(index[mask]) == list(range(len(val)))
  for batch in batches:
    for row in np.flatnonzero(batch["mask"])[::5]:
      record = val[batch["index"][row]]
      assert WNIDS[batch["label"][row]] == record["wnid"]
      np.testing.assert_allclose(
        pipeline.normalize(batch["image"][row]), _torchvision_eval(reader(record["path"]), SIZE), atol=1e-5
      )


def _batches(records, epoch=3, **kwargs):
  return list(
    pipeline.make_train_loader(records, wnids=WNIDS, epoch=epoch, seed=7, global_batch_size=BATCH, image_size=SIZE, **kwargs)
  )


def test_train_batches_are_the_same_for_any_worker_and_host_count(synthetic):
  records = _records(synthetic, "folder", "train")[:-5]  # a partial last batch, dropped
  single = _batches(records, num_workers=0, process_index=0, process_count=1)
  assert len(single) == len(records) // BATCH
  assert len(set(np.concatenate([b["index"] for b in single]))) == len(single) * BATCH
  with_workers = _batches(records, num_workers=2, process_index=0, process_count=1)
  hosts = [_batches(records, num_workers=0, process_index=h, process_count=2) for h in range(2)]
  for step, batch in enumerate(single):
    for key in ("image", "label", "index"):
      assert np.array_equal(with_workers[step][key], batch[key])
      assert np.array_equal(np.concatenate([hosts[0][step][key], hosts[1][step][key]]), batch[key])
  # The same record gets a new crop in another epoch.
  other = _batches(records, num_workers=0, process_index=0, process_count=1, epoch=4)
  first = {int(i): image for b in single for i, image in zip(b["index"], b["image"])}
  again = {int(i): image for b in other for i, image in zip(b["index"], b["image"])}
  shared = sorted(set(first) & set(again))
  assert sum(not np.array_equal(first[i], again[i]) for i in shared) > 0.9 * len(shared)


def test_eval_loader_splits_hosts_and_pads(synthetic):
  val = _records(synthetic, "folder", "val")[:21]
  hosts = [
    list(pipeline.make_eval_loader(val, wnids=WNIDS, batch_size=8, image_size=SIZE, process_index=h, process_count=2))
    for h in range(2)
  ]
  assert [len(h) for h in hosts] == [3, 3] and all(b["image"].shape[0] == 4 for h in hosts for b in h)
  index = np.concatenate([np.concatenate([hosts[0][s]["index"], hosts[1][s]["index"]]) for s in range(3)])
  mask = np.concatenate([np.concatenate([hosts[0][s]["mask"], hosts[1][s]["mask"]]) for s in range(3)])
  assert list(index[mask]) == list(range(21)) and not mask[21:].any() and (index[~mask] == -1).all()


def test_bad_records_raise_errors_naming_them(synthetic, tmp_path):
  records = _records(synthetic, "folder", "train")[:BATCH]
  with pytest.raises(ValueError, match=r"class 'n01443537', which is not in the study's class list"):
    pipeline.make_train_loader(
      records, wnids=WNIDS[1:], epoch=0, seed=0, global_batch_size=BATCH, image_size=SIZE, process_index=0, process_count=1
    )
  with pytest.raises(ValueError, match="no full global batch"):
    _batches(records[:3], process_index=0, process_count=1)
  with pytest.raises(ValueError, match="relative"):
    _batches([{"wnid": WNIDS[0], "path": "a.JPEG"}] * BATCH, process_index=0, process_count=1)


def test_unreadable_images_are_skipped_and_counted_not_fatal(synthetic, tmp_path, caplog):
  records = _records(synthetic, "folder", "train")[: 2 * BATCH]
  corrupt = tmp_path / "corrupt.JPEG"
  corrupt.write_bytes(open(records[0]["path"], "rb").read()[:40])
  broken = [dict(r) for r in records]
  broken[3]["path"] = str(tmp_path / "gone.JPEG")  # vanished since the check (a disk error)
  broken[4]["path"] = str(corrupt)  # changed since the check
  clean = _batches(records, process_index=0, process_count=1)
  batches = _batches(broken, process_index=0, process_count=1)
  assert "gone.JPEG" in caplog.text and "corrupt.JPEG" in caplog.text
  index = np.concatenate([b["index"] for b in batches])
  skipped = np.concatenate([b["skipped"] for b in batches])
  assert len(batches) == len(clean) and skipped.sum() == 2 and not np.concatenate([c["skipped"] for c in clean]).any()
  # Records 3 and 4 are replaced by the next readable one, record 5, with its own crop: the same pixels
  # as record 5's own row; every other row is untouched.
  order = np.concatenate([c["index"] for c in clean])
  assert list(index[skipped]) == [5, 5] and sorted(order[skipped]) == [3, 4]
  images = np.concatenate([b["image"] for b in batches])
  clean_images = np.concatenate([c["image"] for c in clean])
  np.testing.assert_array_equal(images[~skipped], clean_images[~skipped])
  np.testing.assert_array_equal(images[skipped][0], clean_images[list(order).index(5)])
  evaluation = list(
    pipeline.make_eval_loader(broken, wnids=WNIDS, batch_size=BATCH, image_size=SIZE, process_index=0, process_count=1)
  )
  mask = np.concatenate([b["mask"] for b in evaluation])
  assert list(np.flatnonzero(~mask)) == [3, 4]
  assert list(np.flatnonzero(np.concatenate([b["skipped"] for b in evaluation]))) == [3, 4]


def test_two_jax_processes_get_complementary_rows(synthetic, run_multihost):
  """Real multi-host: each of 2 jax.distributed processes takes its rows from jax.process_index()."""
  code = f"""
  import numpy as np
  from jax_aug import sharding
  sharding.initialize_distributed(COORDINATOR, NUM_PROCESSES, PROCESS_ID)
  from jax_aug.data import pipeline, sources
  records = sources.folder_records({str(synthetic / "train")!r})
  batches = list(pipeline.make_train_loader(records, wnids={WNIDS!r}, epoch=3, seed=7,
                                            global_batch_size={BATCH}, image_size={SIZE}))
  emit([b["index"].tolist() for b in batches])
  """
  hosts = run_multihost(code, processes=2, devices_per_process=1)
  single = _batches(_records(synthetic, "folder", "train"), process_index=0, process_count=1)
  assert [h0 + h1 for h0, h1 in zip(*hosts)] == [b["index"].tolist() for b in single]
