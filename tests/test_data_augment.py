"""The reference's training augmentation (aulunet_jax.augment)."""

import numpy as np
import pytest
from scipy import ndimage

from aulunet_jax import augment


def _image_and_mask(seed=0, size=24):
  rng = np.random.default_rng(seed)
  image = rng.uniform(1.0, 255.0, (size, size, 3)).astype(np.float32)
  mask = np.where(image[..., :1] > 128.0, 1.0, 0.5).astype(np.float32)  # a function of the image, never 0
  return image, mask


def test_image_and_mask_move_together():
  image, mask = _image_and_mask()
  for seed in range(40):
    out_image, out_mask = augment.augment(image, mask, np.random.default_rng(seed))
    assert out_image.shape == image.shape and out_mask.shape == mask.shape
    assert out_image.dtype == np.float32 and out_mask.dtype == np.float32
    filled = out_mask[..., 0] == 0  # pixels the rotation filled with zeros
    np.testing.assert_array_equal(out_image[filled], 0.0)
    np.testing.assert_array_equal(out_mask[~filled], np.where(out_image[~filled][:, :1] > 128.0, 1.0, 0.5))


def test_mask_keeps_its_value_set_plus_the_fill():
  image, _ = _image_and_mask()
  mask = np.random.default_rng(1).choice(np.array([0.0, 0.2, 1.0], np.float32), size=(24, 24, 1))
  for seed in range(20):
    _, out_mask = augment.augment(image, mask, np.random.default_rng(seed))
    assert set(np.unique(out_mask)) <= {0.0, np.float32(0.2), 1.0}


def test_rot90_flip_is_exact():
  image, mask = _image_and_mask(size=7)
  stacked = np.concatenate([image, mask], -1)
  seen = set()
  for k in range(4):
    for axis in range(2):
      out = augment.rot90_flip(stacked, k, axis)
      np.testing.assert_array_equal(out, np.flip(np.rot90(stacked, k), axis=axis))  # the reference's calls
      np.testing.assert_array_equal(np.sort(out.reshape(-1, 4), 0), np.sort(stacked.reshape(-1, 4), 0))
      seen.add(out.tobytes())
  # The reference always flips after rotating, so this step gives one of the 4 reflections of the square.
  assert len(seen) == 4


@pytest.mark.parametrize("shape", [(256, 256), (31, 45), (48, 32), (7, 9)])
def test_rotate_is_bit_identical_to_the_reference_ndimage_call(shape):
  rng = np.random.default_rng(0)
  image = rng.uniform(1.0, 255.0, shape + (3,)).astype(np.float32)
  mask = rng.uniform(0.1, 1.0, shape + (1,)).astype(np.float32)
  stacked = np.concatenate([image, mask], -1)
  for angle in range(20, 80):  # every angle the reference draws
    out = augment.rotate(stacked, angle)
    np.testing.assert_array_equal(out[..., :3], ndimage.rotate(image, angle, order=0, reshape=False))
    np.testing.assert_array_equal(out[..., 3:], ndimage.rotate(mask, angle, order=0, reshape=False))
  assert out.shape == stacked.shape and (out[0, 0] == 0).all(), "same size, corners filled with zeros"


def test_each_step_has_probability_one_half():
  image, mask = _image_and_mask(size=16)
  untouched, rotated = 0, 0
  trials = 400
  for seed in range(trials):
    out_image, out_mask = augment.augment(image, mask, np.random.default_rng(seed))
    untouched += np.array_equal(out_image, image)
    rotated += bool((out_mask == 0).any())  # only the free rotation fills pixels
  assert 0.18 < untouched / trials < 0.32  # 1/4: neither step (a reflection is never the identity)
  assert 0.42 < rotated / trials < 0.58


def test_deterministic_for_a_generator_state():
  image, mask = _image_and_mask()
  a = augment.augment(image, mask, np.random.default_rng(5))
  b = augment.augment(image, mask, np.random.default_rng(5))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_mismatched_shapes_are_an_error():
  with pytest.raises(ValueError, match="same height and width"):
    augment.augment(np.zeros((4, 4, 3)), np.zeros((5, 4, 1)), np.random.default_rng(0))
