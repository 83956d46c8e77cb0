"""Fusion boundaries: where XLA must write values to memory once.

XLA's CPU fusion computes each output element of a loop fusion from scratch,
and it counts additions and multiplications as free to recompute: an
element-wise producer fused into a consumer that reads every input element k
times (a 3x3 window: 9 times; a 1x1 convolution: once per output channel) is
evaluated k times per element. Chained through a few layers (1x1 conv ->
BatchNorm -> gate -> depthwise conv -> ...) this multiplies into dozens of
recomputations. The multi-read ops therefore read their inputs from memory.

The boundary is a zero ``pad`` read through a reshaped view. XLA fuses a pad
into a consumer only if the consumer evaluates it once (a pad branches per
element, so its value cannot be shared between evaluations); a pad that is
read several times is computed into memory, with everything before it fused
into that one write. The reshaped view keeps XLA's simplifier from replacing
the slice of the pad that is exactly the unpadded input by the (unmaterialised)
input itself. (``lax.optimization_barrier`` is removed before fusion on CPU,
so it does not help here.)
"""

from typing import Sequence, Tuple

import jax
import jax.numpy as jnp


def pad(x: jax.Array, width: int) -> jax.Array:
  """(N, H, W, C) x zero-padded by ``width`` on both sides of H and W, as the
  (N, H + 2 width, (W + 2 width) * C) view that ``windows`` reads."""
  n, h, w, c = x.shape
  return jnp.pad(x, ((0, 0), (width, width), (width, width), (0, 0))).reshape(n, h + 2 * width, (w + 2 * width) * c)


def windows(padded: jax.Array, shape, offsets: Sequence[Tuple[int, int]]):
  """For each (i, j) in ``offsets``, the window of ``shape`` (N, H, W, C)
  starting at row i, column j of a ``pad``-ded array."""
  n, h, w, c = shape
  return [padded[:, i:i + h, j * c:(j + w) * c].reshape(n, h, w, c) for i, j in offsets]


def padded_windows(x: jax.Array, width: int, offsets: Sequence[Tuple[int, int]]):
  """``windows`` of x padded by ``width`` (the padded array is computed once
  when several windows are read)."""
  return windows(pad(x, width), x.shape, offsets)


def materialize(x: jax.Array) -> jax.Array:
  """x itself, computed into memory once rather than fused into (and
  recomputed by) each of its readers."""
  if x.ndim != 4:
    return x
  (view,) = padded_windows(x, 1, [(1, 1)])
  return view
