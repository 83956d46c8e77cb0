"""The reference's preprocessing of ISIC images and masks, in numpy.

The reference (AULUNet's code, following UltraLight-VM-UNet's
``prepare_ISIC2017.py``) resized every image and mask to 256x256 with
``scipy.misc.imresize(..., interp='bilinear')``, which hands uint8 arrays to
PIL unchanged and resizes them with PIL's bilinear filter; the resized masks
keep their soft values 0-255. At load time it z-scored the whole array with
the dataset mean and standard deviation and then min-max scaled every image to
[0, 255]; a per-image min-max is invariant to an affine map with positive
scale, so the net effect is exactly the per-image min-max of
``normalize_image``. Masks were divided by 255 and kept soft; metrics
binarise at 0.5.
"""

import numpy as np
from PIL import Image


def _check_uint8(array: np.ndarray, what: str) -> np.ndarray:
  array = np.asarray(array)
  if array.dtype != np.uint8:
    raise TypeError(f"{what} must be uint8, got {array.dtype}")
  return array


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 HxWxC image -> uint8 size x size x C, PIL bilinear (as imresize)."""
  image = _check_uint8(image, "image")
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image must be HxWxC with C in (1, 3, 4), got shape {image.shape}")
  if image.shape[:2] == (size, size):
    return image.copy()
  if image.shape[-1] == 1:
    return resize_mask(image, size)
  resized = Image.fromarray(image).resize((size, size), resample=Image.BILINEAR)
  return np.asarray(resized, dtype=np.uint8)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
  """uint8 HxW or HxWx1 mask -> uint8 size x size x 1, PIL bilinear.

  Bilinear on purpose: the reference resized masks bilinearly too, so the
  border pixels hold values between 0 and 255.
  """
  mask = _check_uint8(mask, "mask")
  if mask.ndim == 3 and mask.shape[-1] == 1:
    mask = mask[..., 0]
  if mask.ndim != 2:
    raise ValueError(f"mask must be HxW or HxWx1, got shape {mask.shape}")
  if mask.shape != (size, size):
    mask = np.asarray(Image.fromarray(mask).resize((size, size), resample=Image.BILINEAR), np.uint8)
  return mask[..., None].copy()


def normalize_image(image: np.ndarray) -> np.ndarray:
  """Per-image min-max over all pixels and channels to float32 [0, 255].

  Works on one HxWxC image or a batch [..., H, W, C] (each image scaled on
  its own). A constant image, for which the reference divides by zero and
  yields NaN, maps to zeros.
  """
  image = np.asarray(image, dtype=np.float32)
  if image.ndim < 3:
    raise ValueError(f"image must be HxWxC or [..., H, W, C], got shape {image.shape}")
  lo = image.min(axis=(-3, -2, -1), keepdims=True)
  span = image.max(axis=(-3, -2, -1), keepdims=True) - lo
  # (x - lo) / span is exactly 1 at the maximum, so the output reaches 255 exactly.
  return ((image - lo) / np.where(span > 0, span, np.float32(np.inf)) * np.float32(255.0)).astype(np.float32)


def mask_to_float(mask: np.ndarray) -> np.ndarray:
  """uint8 mask 0-255 -> float32 mask/255 in [0, 1], soft values kept."""
  return _check_uint8(mask, "mask").astype(np.float32) / np.float32(255.0)


def preprocess_image(image: np.ndarray, size: int = 256) -> np.ndarray:
  """A raw uint8 RGB image as the model sees it: resized, then normalised."""
  return normalize_image(resize_image(image, size))
