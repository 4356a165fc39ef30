"""Bad and unusual image files, built in code: correct pixels (16-bit, alpha, palette transparency, CMYK,
EXIF), the one pixel limit, and the bounded resize + centre crop against torchvision."""

import io
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import torchvision.transforms as T
from PIL import Image
from torchvision.datasets.folder import pil_loader

from jax_aug import io as jio
from jax_aug.data import pipeline, transforms
from jax_aug.finetune import inception


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **params)
  return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
  """A PNG whose header claims width x height and holds no pixel data (a decompression bomb's header)."""

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def decode(data: bytes, **options) -> np.ndarray:
  return np.asarray(jio.decode_image(data, source="test-item", **options)).astype(int)


# -- correct pixels (expected values computed by hand) ------------------------------------------------------


def test_16_bit_grayscale_is_scaled_not_clipped():
  values = np.array([[0, 257, 1000, 32896, 65535]], np.uint16)
  pixels = decode(encode(Image.fromarray(values)))
  # v / 257 rounded: 0, 1, 3.89 -> 4, 128, 255 (convert("RGB") would clip all but 0 to 255: white).
  assert pixels[0, :, 0].tolist() == [0, 1, 4, 128, 255]
  assert (pixels == pixels[..., :1]).all()


def test_rgba_is_composited_over_the_background():
  rgba = np.array([[[200, 100, 0, 128], [10, 20, 30, 0], [1, 2, 3, 255]]], np.uint8)
  data = encode(Image.fromarray(rgba, "RGBA"))
  # out = c * a/255 + bg * (1 - a/255): 200*128/255 + 255*127/255 = 227.4, 100 -> 177.2, 0 -> 127.0.
  white = decode(data)
  np.testing.assert_allclose(white[0, 0], [227.4, 177.2, 127.0], atol=1)
  assert white[0, 1].tolist() == [255, 255, 255] and white[0, 2].tolist() == [1, 2, 3]
  black = decode(data, background=(0, 0, 0))
  np.testing.assert_allclose(black[0, 0], [100.4, 50.2, 0], atol=1)
  assert black[0, 1].tolist() == [0, 0, 0]


def test_gray_alpha_and_palette_transparency():
  la = Image.fromarray(np.array([[[100, 128]]], np.uint8), "LA")
  np.testing.assert_allclose(decode(encode(la))[0, 0], [177.2] * 3, atol=1)
  palette = Image.new("P", (2, 1))
  palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
  palette.putpixel((1, 0), 1)
  for fmt in ("PNG", "GIF"):
    pixels = decode(encode(palette, fmt, transparency=1), background=(0, 255, 0))
    # Index 1 is transparent: the background shows, not the palette's blue.
    assert pixels[0].tolist() == [[255, 0, 0], [0, 255, 0]], fmt


def test_cmyk_is_read_as_torchvision_reads_it(tmp_path):
  cmyk = Image.new("CMYK", (3, 2), (0, 128, 255, 64))
  path = tmp_path / "cmyk.tif"
  cmyk.save(path)
  ours = decode(path.read_bytes())
  # Pillow's (and so torchvision's) CMYK -> RGB: (255 - k) - (255 - k) * c / 255 per channel, with
  # k = 64: R = 191, G = 191 - round(128 * 191 / 255) = 95, B = 0.
  assert (ours == [191, 95, 0]).all()
  assert np.array_equal(ours, np.asarray(pil_loader(str(path))))


def test_imagenet_jpegs_are_read_exactly_as_torchvision_reads_them(tmp_path):
  rng = np.random.default_rng(0)
  for mode in ("RGB", "L"):
    image = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"x_{mode}.JPEG"
    image.save(path, quality=90)
    assert np.array_equal(decode(path.read_bytes()), np.asarray(pil_loader(str(path))))


def test_exif_orientation_applied_only_when_asked():
  image = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8))  # stored: red | blue
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90 CW to display": a phone held upright
  data = encode(image, exif=exif.tobytes())
  upright = decode(data, exif_orientation=True)
  assert upright.shape == (2, 1, 3)
  assert upright[0, 0].tolist() == [255, 0, 0] and upright[1, 0].tolist() == [0, 0, 255]  # red on top
  assert decode(data).shape == (1, 2, 3)  # ImageNet: stored orientation, as torchvision reads it


# -- one pixel limit: ours, with our message, configurable both ways ----------------------------------------


def test_bomb_header_is_refused_with_our_message_before_decoding():
  with pytest.raises(
    jio.ImageDecodeError,
    match=r"test-item: 20000x20000 pixels exceeds the limit of"
    r" 268435456 pixels \(decompression bomb guard\)",
  ):
    decode(png_header_only(20000, 20000))


def test_pixel_limit_can_be_raised_above_pillows_and_lowered():
  # 9500 x 9500 = 90.25 Mpx is above Pillow's own guard (89.48 Mpx, which used to fire first with its
  # own message whatever max_pixels said). A 1-bit PNG keeps the file small.
  data = encode(Image.new("1", (9500, 9500), 1))
  with pytest.raises(jio.ImageDecodeError, match="9500x9500 pixels exceeds the limit of 90000000 pixels"):
    decode(data, max_pixels=90_000_000)
  image = jio.decode_image(data, source="test-item", max_pixels=100_000_000)
  assert image.size == (9500, 9500) and image.getpixel((5, 5)) == (255, 255, 255)


# -- one bounded resize + centre crop, against torchvision --------------------------------------------------


def _random_image(width, height, seed=0):
  return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("width,height", [(500, 375), (375, 500), (333, 333), (47, 160), (640, 161)])
@pytest.mark.parametrize(
  "resize,crop,mode", [(256, 224, "BILINEAR"), (342, 299, "BILINEAR"), (64, 64, "BICUBIC"), (37, 32, "BILINEAR")]
)
def test_resize_center_crop_equals_torchvision_on_normal_images(width, height, resize, crop, mode):
  image = _random_image(width, height, width * height)
  reference = T.Compose([T.Resize(resize, interpolation=T.InterpolationMode[mode]), T.CenterCrop(crop)])(image)
  ours = transforms.resize_center_crop(image, resize, crop, Image.Resampling[mode])
  assert np.array_equal(ours, np.asarray(reference))


def test_every_caller_uses_the_torchvision_transform():
  image = _random_image(380, 300, 3)
  to_tensor_norm = [T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
  expected = T.Compose([T.Resize(342), T.CenterCrop(299)] + to_tensor_norm)(image).permute(1, 2, 0).numpy()
  np.testing.assert_allclose(inception.preprocess(image, 299), expected, atol=1e-5)
  expected = T.Compose([T.Resize(256), T.CenterCrop(224)] + to_tensor_norm)(image).permute(1, 2, 0).numpy()
  np.testing.assert_allclose(pipeline.normalize(pipeline.eval_transform(image, 224, 0.875)), expected, atol=1e-5)
  # SD's VAE input (fine-tuning examples and Boomerang's init images): bicubic, scaled to [-1, 1].
  sd = T.Compose(
    [
      T.Resize(64, interpolation=T.InterpolationMode.BICUBIC),
      T.CenterCrop(64),
      T.ToTensor(),
      T.Normalize([0.5] * 3, [0.5] * 3),
    ]
  )
  np.testing.assert_allclose(transforms.vae_image(image, 64), sd(image).numpy(), atol=1e-6)
  # Negative control: bilinear where bicubic is due differs far beyond that tolerance.
  bilinear = T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
  assert np.abs(transforms.vae_image(image, 64) - bilinear(image).numpy()).max() > 0.05


def test_extreme_aspect_ratio_close_to_torchvision():
  # Above 4:1 only the crop window is resampled: within 2 levels of 255 (bilinear, downscaling).
  image = _random_image(1000, 47, 5)
  reference = np.asarray(T.Compose([T.Resize(40), T.CenterCrop(32)])(image)).astype(int)
  ours = transforms.resize_center_crop(image, 40, 32).astype(int)
  assert np.abs(ours - reference).max() <= 2 and np.abs(ours - reference).mean() < 0.1


def _eval_memory_growth(width: int, max_resized_aspect: int) -> int:
  """Bytes by which a fresh process's peak resident memory grows while decoding a width x 1 PNG and
  running the evaluation transform (224 px) on it. Read from /proc/self/status's VmHWM, which starts
  afresh at exec (getrusage's ru_maxrss would carry over the parent's peak)."""
  script = textwrap.dedent(f"""
      import io
      import numpy as np
      from PIL import Image
      from jax_aug import io as jio
      from jax_aug.data import pipeline, transforms
      transforms.MAX_RESIZED_ASPECT = {max_resized_aspect}
      buffer = io.BytesIO()
      Image.fromarray(np.zeros((1, {width}, 3), np.uint8)).save(buffer, format="PNG")
      data = buffer.getvalue()
      def peak_kib():
        with open("/proc/self/status") as f:
          return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])
      before = peak_kib()
      out = pipeline.eval_transform(jio.decode_image(data, source="strip"), 224, 0.875)
      after = peak_kib()
      assert out.shape == (224, 224, 3), out.shape
      print((after - before) * 1024)
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
  return int(result.stdout.split()[-1])


def test_eval_of_a_100000x1_image_stays_under_32_mib():
  # torchvision would materialize 25.6 M x 256 pixels (19.6 GB) for this image. The bound: peak resident
  # memory of a fresh process grows by less than 32 MiB while decoding and transforming it.
  grown = _eval_memory_growth(100000, transforms.MAX_RESIZED_ASPECT)
  assert grown < 32 * 1024 * 1024, f"peak memory grew by {grown / 2**20:.1f} MiB"
  # Negative control: the full resize (the bounded path switched off) of a mere 2000 x 1 image, 512000 x
  # 256 pixels (375 MiB), breaks the bound.
  assert _eval_memory_growth(2000, 10**9) > 32 * 1024 * 1024
