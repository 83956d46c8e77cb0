"""The reference's resizing and normalisation (aulunet_jax.preprocessing)."""

import numpy as np
import pytest

from aulunet_jax import preprocessing


def _random_image(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_resize_image_is_antialiased_bilinear_like_pil():
  image = _random_image((37, 53, 3))
  out = preprocessing.resize_image(image, 16)
  assert out.shape == (16, 16, 3) and out.dtype == np.uint8
  # An independent implementation of PIL's (antialiased) bilinear filter.
  torch = pytest.importorskip("torch")
  t = torch.nn.functional.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].double(), size=(16, 16),
                                      mode="bilinear", antialias=True, align_corners=False)
  expected = t[0].permute(1, 2, 0).numpy()
  assert np.abs(out.astype(np.float64) - expected).max() <= 1.0


def test_resize_keeps_a_constant_image_and_the_size():
  image = np.full((40, 30, 3), 77, np.uint8)
  np.testing.assert_array_equal(preprocessing.resize_image(image, 12), np.full((12, 12, 3), 77, np.uint8))
  same = _random_image((8, 8, 3))
  np.testing.assert_array_equal(preprocessing.resize_image(same, 8), same)


def test_resize_mask_keeps_soft_values_at_the_border():
  mask = np.zeros((64, 64), np.uint8)
  mask[10:41, 13:50] = 255
  out = preprocessing.resize_mask(mask, 24)
  assert out.shape == (24, 24, 1) and out.dtype == np.uint8
  values = np.unique(out)
  assert values[0] == 0 and values[-1] == 255
  assert np.any((values > 0) & (values < 255)), "bilinear resizing leaves soft border values"
  np.testing.assert_array_equal(preprocessing.resize_mask(mask[..., None], 24), out)


def test_normalize_image_is_per_image_min_max():
  image = _random_image((10, 12, 3)) // 2 + 20
  out = preprocessing.normalize_image(image)
  assert out.dtype == np.float32
  assert out.min() == 0.0 and out.max() == 255.0
  np.testing.assert_allclose(out, (image - image.min()) / float(image.max() - image.min()) * 255.0, rtol=1e-5)


def test_normalize_image_cancels_the_reference_z_score():
  image = _random_image((9, 7, 3)).astype(np.float64)
  z_scored = (image - 113.2) / 61.7  # what the reference applied before its min-max
  np.testing.assert_allclose(preprocessing.normalize_image(z_scored), preprocessing.normalize_image(image),
                             atol=1e-3)


def test_normalize_image_batch_scales_each_image_on_its_own():
  batch = np.stack([_random_image((6, 6, 3), seed=s) // (s + 1) for s in range(3)])
  out = preprocessing.normalize_image(batch)
  for i in range(3):
    np.testing.assert_array_equal(out[i], preprocessing.normalize_image(batch[i]))


def test_normalize_constant_image_gives_zeros_not_nan():
  out = preprocessing.normalize_image(np.full((4, 4, 3), 9, np.uint8))
  np.testing.assert_array_equal(out, np.zeros((4, 4, 3), np.float32))


def test_mask_to_float():
  mask = np.array([[0, 128, 255]], np.uint8)
  out = preprocessing.mask_to_float(mask)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, [[0.0, 128 / 255, 1.0]])
  with pytest.raises(TypeError, match="uint8"):
    preprocessing.mask_to_float(mask.astype(np.float32))


def test_bad_shapes_name_the_problem():
  with pytest.raises(ValueError, match="HxWxC"):
    preprocessing.resize_image(np.zeros((4, 4), np.uint8), 2)
  with pytest.raises(ValueError, match="HxW"):
    preprocessing.resize_mask(np.zeros((4, 4, 3), np.uint8), 2)
