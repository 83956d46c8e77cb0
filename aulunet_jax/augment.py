"""The reference's training augmentation, in numpy and scipy.

The reference's ``isic_loader.__getitem__`` (UltraLight-VM-UNet, kept by
AULUNet) applies, to the normalised image and its mask alike:

  if random.random() > 0.5: random_rot_flip   # np.rot90 by k in 0..3, then np.flip on axis 0 or 1
  if random.random() > 0.5: random_rotate     # ndimage.rotate by randint(20, 80) degrees, order=0,
                                              # reshape=False (same size, zero fill)

Here every random draw comes from a ``numpy.random.Generator`` that the
input pipeline derives from its seed and the element's position, so an
epoch's augmentations are reproducible and survive checkpoint and restore.
Image and mask are transformed as one stacked array, so they cannot drift.
"""

import functools
from typing import Tuple

import numpy as np
from scipy import special


def rot90_flip(stacked: np.ndarray, k: int, axis: int) -> np.ndarray:
  """np.rot90 by k quarter turns in the (H, W) plane, then np.flip along ``axis`` (0 or 1).

  Always ending with a flip, the reference's step gives one of the 4
  reflections of the square, never a pure rotation.
  """
  return np.flip(np.rot90(stacked, k, axes=(0, 1)), axis=axis)


@functools.lru_cache(maxsize=256)
def _rotation_sources(height: int, width: int, angle: float) -> np.ndarray:
  """For each output pixel (flat), the input pixel it takes, or height * width for the zero fill."""
  # scipy.ndimage.rotate's arithmetic, step by step, so that the result is bit-identical: the inverse map
  # input = M @ output + offset with M = [[cos, sin], [-sin, cos]] in degrees (special.cosdg / sindg),
  # summed in the order of ndimage's C loop (shift first), nearest sample floor(c + 0.5), and the
  # 'constant' mode's rule that only coordinates within [0, n - 1] sample the input.
  cos, sin = special.cosdg(angle), special.sindg(angle)
  matrix = np.array([[cos, sin], [-sin, cos]])
  centre = (np.array([height, width]) - 1) / 2
  shift = centre - matrix @ centre
  y = np.arange(height, dtype=np.float64)[:, None]
  x = np.arange(width, dtype=np.float64)[None, :]
  source_y = (shift[0] + y * matrix[0, 0]) + x * matrix[0, 1]
  source_x = (shift[1] + y * matrix[1, 0]) + x * matrix[1, 1]
  inside = (source_y >= 0) & (source_y <= height - 1) & (source_x >= 0) & (source_x <= width - 1)
  source = np.floor(source_y + 0.5).astype(np.int64) * width + np.floor(source_x + 0.5).astype(np.int64)
  return np.where(inside, source, height * width).ravel()


def rotate(stacked: np.ndarray, angle: float) -> np.ndarray:
  """Rotation by ``angle`` degrees about the centre: nearest neighbour, same size, zero fill.

  Bit-identical to the reference's ``ndimage.rotate(x, angle, order=0,
  reshape=False)`` on every channel, but one gather of whole pixels with a
  cached index map instead of a spline pass per channel (~30x faster at
  256x256x4).
  """
  height, width = stacked.shape[:2]
  pixels = stacked.reshape(height * width, -1)
  padded = np.concatenate([pixels, np.zeros_like(pixels[:1])])  # row height * width is the fill
  return np.take(padded, _rotation_sources(height, width, float(angle)), axis=0).reshape(stacked.shape)


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
  """The reference's random rot90 + flip, then random rotation, each with probability 0.5.

  image: HxWxC, mask: HxWx1 (any dtype; nearest-neighbour keeps the value set,
  plus the fill value 0). Returns new contiguous arrays of the input dtypes.
  """
  if image.shape[:2] != mask.shape[:2]:
    raise ValueError(f"image {image.shape} and mask {mask.shape} must have the same height and width")
  channels = image.shape[-1]
  stacked = np.concatenate([image, mask.astype(image.dtype)], axis=-1)
  if rng.random() > 0.5:
    stacked = rot90_flip(stacked, int(rng.integers(0, 4)), int(rng.integers(0, 2)))
  if rng.random() > 0.5:
    stacked = rotate(stacked, int(rng.integers(20, 80)))
  # Contiguous outputs: batching strided views would cost more than the augmentation.
  return np.ascontiguousarray(stacked[..., :channels]), np.ascontiguousarray(stacked[..., channels:], mask.dtype)
