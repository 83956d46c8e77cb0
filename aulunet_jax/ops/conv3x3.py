"""Full 3x3 convolution with 'same' zero padding, for few channels (the stem).

PyTorch's ``nn.Conv2d(cin, cout, 3, padding=1, bias=False)`` in NHWC, kernel
stored as (3, 3, Cin, Cout) (HWIO). For the model's 3 -> 5 stem, XLA's CPU
convolution spends most of its time on the tiny channel dimensions. The fast
version is nine shifted 1x1 convolutions (``pointwise``'s broadcast
multiply-adds: 27 for the stem), with the backward pass

  dx  = the same over g with the kernel flipped and transposed,
  dk  = XLA's own kernel-gradient convolution (the plain version's autodiff).

XLA is slow at the forward convolution (16.9 against 2.3 ms with the fast
version, 8 images of 256x256, BatchNorm and ReLU fused after) but not at the
kernel gradient: 6.1 ms against 13.5 ms for nine shifted windows of x, each
copied out for a matrix product with g.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from aulunet_jax.ops import fusion
from aulunet_jax.ops.fusion import materialize
from aulunet_jax.ops.pointwise import multiply_add
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
  return _correlate(fusion.pad(x, 1), x.shape, kernel)


def _conv_fwd(x, kernel):
  return _conv(x, kernel), (x, kernel)


def _conv_bwd(residuals, g):
  x, kernel = residuals
  g = materialize(g)  # read at every tap
  dx = _correlate(fusion.pad(g, 1), g.shape, jnp.swapaxes(kernel[::-1, ::-1], 2, 3))
  _, kernel_vjp = jax.vjp(lambda k: conv3x3_reference(x, k), kernel)
  (dk,) = kernel_vjp(g)
  return dx, dk


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 convolution, stride 1, zero padding 1, no bias."""
  if using_reference():
    return conv3x3_reference(x, kernel)
  _check(x, kernel)
  acc = jnp.promote_types(x.dtype, jnp.float32)  # accumulate bfloat16 input in float32, as XLA's conv does
  return _conv(x.astype(acc), kernel.astype(acc)).astype(x.dtype)
