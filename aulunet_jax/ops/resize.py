"""Bilinear x2 upsampling with ``align_corners=True``.

PyTorch's ``nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)``
maps output index i to source coordinate i * (H - 1) / (2H - 1), so the corner
pixels of input and output coincide. ``jax.image.resize`` uses half-pixel
centres instead, which gives different values.
"""

import jax
import jax.numpy as jnp
import numpy as np

from aulunet_jax.ops.switch import using_reference


def _source_coords(n: int) -> np.ndarray:
  if n == 1:
    return np.zeros((2,), np.float64)
  return np.arange(2 * n, dtype=np.float64) * (n - 1) / (2 * n - 1)


def interpolation_matrix(n: int) -> np.ndarray:
  """(2n, n) matrix M such that M @ v is the align-corners x2 resize of v."""
  src = _source_coords(n)
  lo = np.floor(src).astype(np.int64)
  hi = np.minimum(lo + 1, n - 1)
  w_hi = src - lo
  m = np.zeros((2 * n, n), np.float64)
  rows = np.arange(2 * n)
  np.add.at(m, (rows, lo), 1.0 - w_hi)
  np.add.at(m, (rows, hi), w_hi)
  return m


def upsample2x_align_corners_reference(x: jax.Array) -> jax.Array:
  """Plain version: gather the two neighbours along each axis and blend."""
  def along(v, axis):
    n = v.shape[axis]
    src = _source_coords(n)
    lo = np.floor(src).astype(np.int32)
    hi = np.minimum(lo + 1, n - 1)
    shape = [1] * v.ndim
    shape[axis] = 2 * n
    w = jnp.asarray((src - lo).reshape(shape), v.dtype)
    return jnp.take(v, lo, axis=axis) * (1 - w) + jnp.take(v, hi, axis=axis) * w
  return along(along(x, 1), 2)


def upsample2x_align_corners(x: jax.Array) -> jax.Array:
  """The model's upsampling: two small matrix products (rows, then columns)."""
  if using_reference():
    return upsample2x_align_corners_reference(x)
  _, h, w, _ = x.shape
  mh = jnp.asarray(interpolation_matrix(h), x.dtype)
  mw = jnp.asarray(interpolation_matrix(w), x.dtype)
  y = jnp.einsum("ph,nhwc->npwc", mh, x)
  return jnp.einsum("qw,npwc->npqc", mw, y)
