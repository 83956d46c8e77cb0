"""Sums over pixels, and the broadcasts that are their transposes.

``channel_sum`` (N, H, W, C) -> (C,) feeds BatchNorm statistics and every
per-channel parameter gradient; ``spatial_sum`` (N, H, W, C) -> (N, C) feeds
global average pooling and the gradients of per-image gates. Both take one
array or several equal-shape factors whose element-wise product is summed
(x * g for a gradient), and ``pixel_sums`` computes many such sums together.
Their transposes, ``broadcast_channels`` and ``broadcast_spatial``, are what
autodiff sums through in the backward pass.

Why not ``jnp.sum``: XLA's CPU reductions over the leading axes of an NHWC
tensor with few channels keep a 5-wide minor axis and run several times
slower than the memory allows; and XLA hands reductions to a library that
takes the element-wise producers along (the product x * g, and slices of
padded arrays, which it then copies out one by one). Here each array is
viewed as (N, H, W*C), and the rows are first folded ``_FOLD``-fold by
adding row blocks -- the products formed block by block -- in ordinary loop
fusions that read every input once, up to ``_MAX_STACK`` sums per fusion
(XLA does not fuse a larger concatenation). Only the folded arrays,
``_FOLD`` times smaller, go to the library reduction.

Those folds run along W*C, and a per-channel vector fused into them (a
BatchNorm's scale and shift before the sum) would be read at index mod C,
which LLVM leaves scalar. ``broadcast_channels`` therefore broadcasts from
a (W, C) copy of the vector (``fusion.tiled_channels``). With the copies,
batch-8 inference went 27.2 -> 24.8 ms and batch 1 4.00 -> 3.67 ms
(same-process A/B, copies for arrays of 2^17 elements or more; on every
array they first cost batch 1 a millisecond in kernels of their own, and
stopped costing it once the depthwise copies ran along W*C as well).
"""

import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
from jax import lax

from aulunet_jax.ops.fusion import tiled_channels
from aulunet_jax.ops.switch import using_reference

_FOLD = 8
_MAX_STACK = 8

Term = Tuple[jax.Array, ...]


def _check_terms(terms: Sequence[Term], what: str):
  if not terms or any(not t for t in terms):
    raise ValueError(f"{what} needs at least one term of at least one array")
  shape = terms[0][0].shape
  if len(shape) != 4 or any(a.shape != shape for t in terms for a in t):
    raise ValueError(f"{what} expects (N, H, W, C) arrays of one shape, got "
                     f"{[[a.shape for a in t] for t in terms]}")


def pixel_sums_reference(terms: Sequence[Term], per_image: bool) -> jax.Array:
  _check_terms(terms, "pixel_sums")
  axes = (1, 2) if per_image else (0, 1, 2)
  return jnp.stack([jnp.sum(functools.reduce(jnp.multiply, t), axis=axes) for t in terms])


def _fold(n: int) -> int:
  """The largest fold (at most ``_FOLD``) dividing n rows into blocks."""
  return max(f for f in range(1, _FOLD + 1) if n % f == 0)


def _folded_products(term: Term, fold: int, parts: int):
  """prod(term) viewed as (N, H, W*C), with H folded ``fold``-fold: as
  ``parts`` partial folds (each over fold / parts blocks) that add up to it."""
  n, h, w, c = term[0].shape
  views = [a.reshape(n, h, w * c) for a in term]
  size = h // fold
  blocks = [functools.reduce(jnp.multiply, [lax.slice_in_dim(v, i * size, (i + 1) * size, axis=1) for v in views])
            for i in range(fold)]
  per_part = fold // parts
  return [functools.reduce(jnp.add, blocks[i:i + per_part]) for i in range(0, fold, per_part)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _pixel_sums(terms, per_image):
  n, h, w, c = terms[0][0].shape
  fold = _fold(h)
  sums = []
  # Groups whose sizes differ by one at most (17 sums: 5, 6, 6): a group of
  # one would read its padded input through a copy of its own.
  groups = -(-len(terms) // _MAX_STACK)
  bounds = [len(terms) * k // groups for k in range(groups + 1)]
  for i, j in zip(bounds[:-1], bounds[1:]):
    group = terms[i:j]
    # A lone fold would be taken into the library reduction (which then
    # copies out its slices): it goes in as two halves.
    parts = 2 if len(group) == 1 and fold % 2 == 0 else 1
    folded = jnp.stack([f for t in group for f in _folded_products(t, fold, parts)])
    # Rows (and images) summed by the library; parts, W after it.
    if per_image:
      rows = jnp.sum(folded, axis=2).reshape(len(group), parts, n, w, c)
      sums.append(rows.sum(axis=(1, 3)))
    else:
      rows = jnp.sum(folded, axis=(1, 2)).reshape(len(group), parts, w, c)
      sums.append(rows.sum(axis=(1, 2)))
  return sums[0] if len(sums) == 1 else jnp.concatenate(sums)


def _pixel_sums_fwd(terms, per_image):
  return _pixel_sums(terms, per_image), terms


def _pixel_sums_bwd(per_image, terms, ct):
  # d/d a_i of sum(prod_j a_j) is the cotangent spread over the pixels times
  # the other factors (autodiff of the folds would scatter it block by block).
  shape = terms[0][0].shape
  grads = []
  for t, c in zip(terms, ct):
    spread = jnp.broadcast_to(c[:, None, None, :] if per_image else c, shape)
    grads.append(tuple(functools.reduce(jnp.multiply, [spread] + [b for j, b in enumerate(t) if j != i])
                       for i in range(len(t))))
  return (grads,)


_pixel_sums.defvjp(_pixel_sums_fwd, _pixel_sums_bwd)


def pixel_sums(terms: Sequence[Term], per_image: bool) -> jax.Array:
  """For each term (a tuple of (N, H, W, C) arrays), the sum over pixels of
  the product of its arrays: (T, N, C) with ``per_image``, else (T, C)."""
  if using_reference():
    return pixel_sums_reference(terms, per_image)
  _check_terms(terms, "pixel_sums")
  return _pixel_sums([tuple(t) for t in terms], per_image)


def channel_sum_reference(*factors: jax.Array) -> jax.Array:
  return pixel_sums_reference([factors], per_image=False)[0]


def spatial_sum_reference(*factors: jax.Array) -> jax.Array:
  return pixel_sums_reference([factors], per_image=True)[0]


def channel_sum(*factors: jax.Array) -> jax.Array:
  """Sum over N, H and W of the product of (N, H, W, C) arrays: (C,)."""
  return pixel_sums([factors], per_image=False)[0]


def spatial_sum(*factors: jax.Array) -> jax.Array:
  """Sum over H and W of the product of (N, H, W, C) arrays: (N, C)."""
  return pixel_sums([factors], per_image=True)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _broadcast_channels(v, shape):
  return jnp.broadcast_to(tiled_channels(v, shape[2]), shape)  # see the module docstring


def _broadcast_channels_fwd(v, shape):
  return _broadcast_channels(v, shape), None


def _broadcast_channels_bwd(shape, _, ct):
  return (channel_sum(ct),)


_broadcast_channels.defvjp(_broadcast_channels_fwd, _broadcast_channels_bwd)


def broadcast_channels(v: jax.Array, shape) -> jax.Array:
  """(C,) -> (N, H, W, C); its transpose (in autodiff) is ``channel_sum``."""
  shape = tuple(shape)
  if v.shape != shape[-1:] or len(shape) != 4:
    raise ValueError(f"broadcast_channels takes (C,) to (N, H, W, C), got {v.shape} -> {shape}")
  if using_reference():
    return jnp.broadcast_to(v, shape)
  return _broadcast_channels(v, shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _broadcast_spatial(v, shape):
  return jnp.broadcast_to(v[:, None, None, :], shape)


def _broadcast_spatial_fwd(v, shape):
  return _broadcast_spatial(v, shape), None


def _broadcast_spatial_bwd(shape, _, ct):
  return (spatial_sum(ct),)


_broadcast_spatial.defvjp(_broadcast_spatial_fwd, _broadcast_spatial_bwd)


def broadcast_spatial(v: jax.Array, shape) -> jax.Array:
  """(N, C) -> (N, H, W, C); its transpose (in autodiff) is ``spatial_sum``."""
  shape = tuple(shape)
  if len(shape) != 4 or v.shape != (shape[0], shape[3]):
    raise ValueError(f"broadcast_spatial takes (N, C) to (N, H, W, C), got {v.shape} -> {shape}")
  if using_reference():
    return jnp.broadcast_to(v[:, None, None, :], shape)
  return _broadcast_spatial(v, shape)
