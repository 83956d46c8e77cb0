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

The windows of the convolutions read a copy of x with zeros on all four
sides, as its (N, H + 2 width, (W + 2 width) * C) view: each window is a
plain slice. The copy is written by a loop over that view, which vectorises
along W*C once the per-channel vectors fused into it are read from (W, C)
copies (``tiled_channels``, used by ``reductions.broadcast_channels``).
Before those copies, a pixel-order layout with zero rows only (windows
shifted sideways then start in the neighbouring row, and need a select or a
column mask) was faster; with them, the zero-column layout for the
depthwise convolutions took batch-8 inference 24.1 -> 22.6 ms and batch 1
3.73 -> 3.34 ms, and the training step 123.5 -> 119.6 ms with the forward
pass on it, 117.7 -> 115.7 ms with the backward as well (same-process A/B).
``materialize``, which reads its copy back whole, pads rows only: its
write is then a loop over (N, H + 2, W, C) that vectorises over channels.
"""

from typing import Sequence, Tuple

import jax
import jax.numpy as jnp


def pad(x: jax.Array, width: int) -> jax.Array:
  """(N, H, W, C) x with ``width`` zeros on all four sides, as the
  (N, H + 2 width, (W + 2 width) * C) view that ``windows`` reads."""
  n, h, w, c = x.shape
  return jnp.pad(x, ((0, 0), (width, width), (width, width), (0, 0))).reshape(n, h + 2 * width, (w + 2 * width) * c)


def windows(padded: jax.Array, shape, offsets: Sequence[Tuple[int, int]]):
  """For each (i, j) in ``offsets``, the window of ``shape`` (N, H, W, C)
  starting at row i, column j of the zero-padded x that ``padded`` (from
  ``pad``) holds."""
  n, h, w, c = shape
  return [padded[:, i:i + h, j * c:(j + w) * c].reshape(n, h, w, c) for i, j in offsets]


def materialize(x: jax.Array) -> jax.Array:
  """x itself, computed into memory once rather than fused into (and
  recomputed by) each of its readers."""
  if x.ndim != 4:
    return x
  n, h, w, c = x.shape
  return jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0))).reshape(n, (h + 2) * w, c)[:, w:(h + 1) * w].reshape(x.shape)


def tiled_channels(v: jax.Array, w: int) -> jax.Array:
  """(C,) v repeated for each of W columns, computed into memory as (W, C).

  A fused loop over the (N, H, W*C) view of an array (the row folds of
  pixel sums, the padded copies above) that reads a (C,) vector finds each
  element's channel as its index mod C: LLVM then emits scalar code for the
  whole loop. Read from the (W, C) copy, the index is the element's own and
  the loop vectorises."""
  return materialize(jnp.broadcast_to(v, (1, 1, w) + v.shape))[0, 0]
