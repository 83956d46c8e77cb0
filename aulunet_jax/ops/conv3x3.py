"""Full 3x3 convolution with 'same' zero padding, for few channels (the stem).

PyTorch's ``nn.Conv2d(cin, cout, 3, padding=1, bias=False)`` in NHWC, kernel
stored as (3, 3, Cin, Cout) (HWIO). For the model's 3 -> 5 stem, XLA's CPU
convolution spends most of its time on the tiny channel dimensions. The fast
version is nine shifted 1x1 convolutions (``pointwise``'s broadcast
multiply-adds: 27 for the stem), with the backward pass

  dx         = the same over g with the kernel flipped and transposed,
  dk[i, j]   = x_pad[shifted by (i, j)]^T g over all pixels (a matrix product).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from aulunet_jax.ops import fusion
from aulunet_jax.ops.fusion import materialize
from aulunet_jax.ops.pointwise import multiply_add, pixel_outer_sum
from aulunet_jax.ops.switch import using_reference


def _check(x, kernel):
  if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[:3] != (3, 3, x.shape[-1]):
    raise ValueError(f"3x3 convolution of {x.shape} needs a (3, 3, {x.shape[-1]}, Cout) kernel, got {kernel.shape}")


def conv3x3_reference(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Plain version: one XLA convolution (as nn.Conv with padding=1)."""
  _check(x, kernel)
  return lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), ((1, 1), (1, 1)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


_TAPS = [(i, j) for i in range(3) for j in range(3)]


def _correlate(padded, shape, kernel):
  """sum over taps of window (of input ``shape``) times kernel[tap] (Cin, Cout)."""
  views = fusion.windows(padded, shape, _TAPS)
  return materialize(functools.reduce(jnp.add, [multiply_add(v, kernel[t]) for v, t in zip(views, _TAPS)]))


@jax.custom_vjp
def _conv(x, kernel):
  return _correlate(fusion.pad(x, 1, columns=True), x.shape, kernel)


def _conv_fwd(x, kernel):
  padded = fusion.pad(x, 1, columns=True)
  return _correlate(padded, x.shape, kernel), (padded, kernel)


def _conv_bwd(residuals, g):
  padded, kernel = residuals
  g = materialize(g)  # read at every tap
  _, _, cin, cout = kernel.shape
  dx = _correlate(fusion.pad(g, 1, columns=True), g.shape, jnp.swapaxes(kernel[::-1, ::-1], 2, 3))
  views = fusion.windows(padded, (*g.shape[:-1], cin), _TAPS)
  dk = jnp.stack([pixel_outer_sum(v, g) for v in views]).reshape(3, 3, cin, cout)
  return dx, dk.astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 convolution, stride 1, zero padding 1, no bias."""
  if using_reference():
    return conv3x3_reference(x, kernel)
  _check(x, kernel)
  acc = jnp.promote_types(x.dtype, jnp.float32)  # accumulate bfloat16 input in float32, as XLA's conv does
  return _conv(x.astype(acc), kernel.astype(acc)).astype(x.dtype)
