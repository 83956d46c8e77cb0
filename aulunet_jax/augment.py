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

from typing import Tuple

import numpy as np
from scipy import ndimage


def rot90_flip(stacked: np.ndarray, k: int, axis: int) -> np.ndarray:
  """np.rot90 by k quarter turns in the (H, W) plane, then np.flip along ``axis`` (0 or 1).

  Always ending with a flip, the reference's step gives one of the 4
  reflections of the square, never a pure rotation.
  """
  return np.flip(np.rot90(stacked, k, axes=(0, 1)), axis=axis)


def rotate(stacked: np.ndarray, angle: float) -> np.ndarray:
  """Rotation by ``angle`` degrees about the centre: nearest neighbour, same size, zero fill."""
  return ndimage.rotate(stacked, angle, axes=(1, 0), reshape=False, order=0, mode="constant", cval=0.0)


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
  stacked = np.ascontiguousarray(stacked)
  return stacked[..., :channels], stacked[..., channels:].astype(mask.dtype)
