"""1x1 convolution (a per-pixel matrix product over channels) in NHWC.

With the model's few channels (5 to 70 in, 1 to 60 out) XLA's CPU matrix
product of (N*H*W, Cin) by (Cin, Cout) runs several times slower than an
element-wise pass over the same data, and the kernel gradient x^T g is slower
still. The fast version writes the product out as Cin broadcast
multiply-adds,

  out = sum_c x[..., c] * k[c, :],

which XLA fuses into one loop (together with the element-wise work after it),
with the backward pass

  dx         = the same with k^T,
  dk         = x^T g over all pixels (a matrix product with a long
               contraction, which XLA's library does well; for a single
               output channel, the fused pixel sums of x * g).

Each output channel re-evaluates whatever XLA fuses into x. From
``_MATERIALIZE_FROM_COUT`` output channels on, the inputs are first written
to memory: the skip gate at 128x128 (20 -> 10 channels, its inputs
BatchNorm+ReLU of stored arrays) took 13.5 ms fused and 3.3 ms so at batch
8, while at 256x256 (10 -> 5) fusing stays 2x faster.

Past ``_MAX_UNROLLED`` multiply-adds per pixel (Cin * Cout: only the
low-resolution stages, where the arrays are small) the matrix product is
used: the unrolled form stops paying there and costs compile time.

The input may also be given as several arrays whose channel concatenation is
convolved (the skip gate's [decoder, encoder]): each part is multiplied by its
rows of the kernel, and the concatenation is never written to memory.
"""

import functools
from typing import Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax

from aulunet_jax.ops import reductions
from aulunet_jax.ops.fusion import materialize
from aulunet_jax.ops.switch import using_reference

Inputs = Union[jax.Array, Sequence[jax.Array]]

_MAX_UNROLLED = 256
_MATERIALIZE_FROM_COUT = 10


def _parts(inputs: Inputs):
  return tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)


def _check(parts, kernel):
  cin = sum(p.shape[-1] for p in parts)
  shapes = {p.shape[:-1] for p in parts}
  if len(shapes) != 1:
    raise ValueError(f"1x1 convolution of a channel concatenation needs equal leading shapes, got "
                     f"{[p.shape for p in parts]}")
  if kernel.ndim != 2 or kernel.shape[0] != cin:
    raise ValueError(f"1x1 convolution of {cin} channels needs a ({cin}, Cout) kernel, got {kernel.shape}")


def pointwise_conv_reference(inputs: Inputs, kernel: jax.Array) -> jax.Array:
  """Plain version: one matrix product over the channel axis (as nn.Dense)."""
  parts = _parts(inputs)
  _check(parts, kernel)
  x = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def multiply_add(x, kernel):
  """sum_c x[..., c] * kernel[c, :] as broadcast multiply-adds (XLA fuses
  x's producers in, recomputed Cout times: ``x`` should be in memory, or
  cheap to recompute)."""
  return functools.reduce(jnp.add, [x[..., c:c + 1] * kernel[c] for c in range(kernel.shape[0])])


def _row_blocks(parts, kernel):
  bounds = [0]
  for p in parts:
    bounds.append(bounds[-1] + p.shape[-1])
  return [kernel[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def pixel_outer_sum(x, g):
  """sum over pixels of the outer products x[p, :]^T g[p, :]: (Cin, Cout).

  A matrix product with a long contraction, which XLA's library does well
  (unlike the short one of the forward pass)."""
  return lax.dot_general(x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]), (((0,), (0,)), ((), ())))


def _forward(parts, kernel):
  if kernel.shape[1] >= _MATERIALIZE_FROM_COUT:
    parts = tuple(materialize(p) for p in parts)
  return functools.reduce(jnp.add, [multiply_add(p, k) for p, k in zip(parts, _row_blocks(parts, kernel))])


@jax.custom_vjp
def _pointwise(parts, kernel):
  return materialize(_forward(parts, kernel))


def _pointwise_fwd(parts, kernel):
  return _pointwise(parts, kernel), (parts, kernel)


def _pointwise_bwd(residuals, g):
  parts, kernel = residuals
  g = materialize(g)  # read Cin times per pixel, and by the kernel-gradient sums
  cout = kernel.shape[1]
  dparts, dk = [], []
  for p, k in zip(parts, _row_blocks(parts, kernel)):
    dparts.append(materialize(multiply_add(g, k.T)))
    if cout == 1:
      # A one-column product (the head): the fused pixel sums read p where it
      # is computed; the matrix product would first copy it out (3x slower).
      dk.append(reductions.channel_sum(p, jnp.broadcast_to(g, p.shape))[:, None])
    else:
      dk.append(pixel_outer_sum(p, g))
  return tuple(dparts), jnp.concatenate(dk).astype(kernel.dtype)


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def pointwise_conv(inputs: Inputs, kernel: jax.Array) -> jax.Array:
  """1x1 convolution of (N, H, W, Cin) -- or of the channel concatenation of
  several such arrays -- with a (Cin, Cout) kernel."""
  parts = _parts(inputs)
  _check(parts, kernel)
  if using_reference() or parts[0].ndim != 4 or kernel.size > _MAX_UNROLLED:
    return pointwise_conv_reference(parts, kernel)
  dtype = parts[0].dtype
  acc = jnp.promote_types(dtype, jnp.float32)  # accumulate bfloat16 input in float32, as XLA's dot does
  return _pointwise(tuple(p.astype(acc) for p in parts), kernel.astype(acc)).astype(dtype)
