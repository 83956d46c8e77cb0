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

Where the pad goes matters as much. A fused pad tests every output index
against the padding, and on the channel and width axes that test sits in the
innermost loop: LLVM then emits scalar code for the whole fusion (seen in
the dumped IR, ``XLA_FLAGS=--xla_dump_to=DIR``: not one vector instruction
in AKF's padded write). Padding rows only keeps the test in an outer loop,
which LLVM hoists, and the fusion vectorises. So ``pad`` adds zero rows and
lays the pixels out in row order; a window shifted sideways then starts in
the neighbouring row, and ``windows`` zeroes those columns with a select.
``pad(x, width, columns=True)`` adds zero columns as well and needs no
select. The stem's forward and backward use it (27 windows of a 3-channel
input: batch-8 inference took 31.6 ms so, 38.0 ms with the stem on row
padding, 39.7 ms with zero columns everywhere, in one process). The
depthwise kernel-gradient sums take row-layout windows with
``zero_wrapped=False`` and leave the wrapped columns out by a constant
column mask (``pixel_sums``' ``column_shifts``): cheaper than the selects
and than a zero-column copy of x.
"""

from typing import Sequence, Tuple

import jax
import jax.numpy as jnp


def pad(x: jax.Array, width: int, columns: bool = False) -> jax.Array:
  """(N, H, W, C) x zero-padded for windows reaching ``width`` pixels out.

  Row layout (default): 2 ``width`` zero rows above and below (at least
  one), as the (N, (H + 2 rows) * W, C) view of the pixels in row order; the
  extra rows keep a window that starts ``width`` columns left of row 0
  inside the array, even in an image narrower than ``width``. Column layout
  (``columns=True``): ``width`` zeros on all four sides, as the
  (N, H + 2 width, (W + 2 width) * C) view.
  """
  n, h, w, c = x.shape
  if columns:
    return jnp.pad(x, ((0, 0), (width, width), (width, width), (0, 0))).reshape(n, h + 2 * width,
                                                                               (w + 2 * width) * c)
  rows = max(2 * width, 1)
  return jnp.pad(x, ((0, 0), (rows, rows), (0, 0), (0, 0))).reshape(n, (h + 2 * rows) * w, c)


def windows(padded: jax.Array, shape, offsets: Sequence[Tuple[int, int]], zero_wrapped: bool = True):
  """For each (i, j) in ``offsets``, the window of ``shape`` (N, H, W, C)
  starting at row i, column j of the zero-padded x that ``padded`` (from
  ``pad``, either layout) holds. With ``zero_wrapped=False``, a row-layout
  window keeps the values of the columns that it reads from the
  neighbouring row (where the shift leaves the image), for a caller that
  leaves those columns out itself."""
  n, h, w, c = shape
  if padded.shape[-1] != c:  # column layout
    return [padded[:, i:i + h, j * c:(j + w) * c].reshape(n, h, w, c) for i, j in offsets]
  rows = (padded.shape[1] // w - h) // 2
  width = rows // 2
  columns = jnp.arange(w)[None, None, :, None]
  views = []
  for i, j in offsets:
    dy, dx = i - width, j - width
    start = (rows + dy) * w + dx
    view = padded[:, start:start + h * w].reshape(n, h, w, c)
    if dx and zero_wrapped:  # columns that fell into the neighbouring row read zeros
      view = jnp.where(columns_inside(columns, dx, w), view, jnp.zeros((), view.dtype))
    views.append(view)
  return views


def columns_inside(columns, shift: int, w: int):
  """Which of ``columns`` (column indices, NumPy or JAX) stay inside an
  image W wide when shifted ``shift`` columns sideways; the others a
  row-layout window reads from the neighbouring row."""
  return (columns + shift >= 0) & (columns + shift < w)


def padded_windows(x: jax.Array, width: int, offsets: Sequence[Tuple[int, int]]):
  """``windows`` of x padded by ``width`` (the padded array is computed once
  when several windows are read)."""
  return windows(pad(x, width), x.shape, offsets)


def materialize(x: jax.Array) -> jax.Array:
  """x itself, computed into memory once rather than fused into (and
  recomputed by) each of its readers."""
  if x.ndim != 4:
    return x
  (view,) = padded_windows(x, 0, [(0, 0)])
  return view


def tiled_channels(v: jax.Array, w: int) -> jax.Array:
  """(C,) v repeated for each of W columns, computed into memory as (W, C).

  A fused loop over the (N, H, W*C) view of an array (the row folds of
  pixel sums) that reads a (C,) vector finds each element's channel as its
  index mod C: LLVM then emits scalar code for the whole loop. Read from
  the (W, C) copy, the index is the element's own and the loop vectorises."""
  (row,) = materialize(jnp.broadcast_to(v, (1, 1, w) + v.shape))[0]
  return row
