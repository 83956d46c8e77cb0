"""Bilinear x2 upsampling with ``align_corners=True``.

PyTorch's ``nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)``
maps output index i to source coordinate i * (H - 1) / (2H - 1), so the corner
pixels of input and output coincide. ``jax.image.resize`` uses half-pixel
centres instead, which gives different values.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from aulunet_jax.ops.fusion import materialize
from aulunet_jax.ops.pointwise import pointwise_conv, pointwise_conv_reference
from aulunet_jax.ops.switch import using_reference


def _source_coords(n: int) -> np.ndarray:
  if n == 1:
    return np.zeros((2,), np.float64)
  return np.arange(2 * n, dtype=np.float64) * (n - 1) / (2 * n - 1)


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


def _upsample_axis(x: jax.Array, axis: int) -> jax.Array:
  """x2 along one axis as a fixed two-tap blend with each neighbour.

  With n input samples, output 2k samples source k - k/(2n-1) and output
  2k+1 samples k + (n-1-k)/(2n-1), so

    out[2k]   = x[k] + a_k (x[k-1] - x[k]),   a_k = k / (2n-1),
    out[2k+1] = x[k] + b_k (x[k+1] - x[k]),   b_k = (n-1-k) / (2n-1),

  (a_0 = b_{n-1} = 0: the zero padding beyond the edges gets no weight):
  shifted views, per-position weights and an interleave, all element-wise.
  """
  n = x.shape[axis]
  shape = [1] * x.ndim
  shape[axis] = n
  k = np.arange(n, dtype=np.float64)
  a = jnp.asarray((k / (2 * n - 1)).reshape(shape), x.dtype)
  b = jnp.asarray(((n - 1 - k) / (2 * n - 1)).reshape(shape), x.dtype)
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  xp = jnp.pad(x, pad)
  before = lax.slice_in_dim(xp, 0, n, axis=axis)
  after = lax.slice_in_dim(xp, 2, n + 2, axis=axis)
  even = x + a * (before - x)
  odd = x + b * (after - x)
  out_shape = list(x.shape)
  out_shape[axis] = 2 * n
  return jnp.stack([even, odd], axis=axis + 1).reshape(out_shape)


def upsample2x_align_corners(x: jax.Array) -> jax.Array:
  """The model's upsampling: the two-tap blend along rows, then columns."""
  if using_reference():
    return upsample2x_align_corners_reference(x)
  if x.ndim != 4:
    raise ValueError(f"upsampling expects NHWC input, got shape {x.shape}")
  return materialize(_upsample_axis(_upsample_axis(x, 1), 2))


def pointwise_conv_of_upsampled_reference(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return pointwise_conv_reference(upsample2x_align_corners_reference(x), kernel)


def pointwise_conv_of_upsampled(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """1x1 convolution of the x2 upsampling of x (the decoder's up-projection).

  Computed as the upsampling of the 1x1 convolution: the same values (both
  maps are linear and act on different axes), with the convolution at a
  quarter of the pixels and, where it reduces channels, fewer channels to
  upsample.
  """
  if using_reference():
    return pointwise_conv_of_upsampled_reference(x, kernel)
  return upsample2x_align_corners(pointwise_conv(x, kernel))
