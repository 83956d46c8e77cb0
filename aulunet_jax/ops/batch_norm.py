"""BatchNorm's batch statistics and affine step, with backward passes that
read each full-size array once.

Autodiff of the two-pass statistics (mean, then the mean square of
x - mean) sums the cotangent of x - mean over the pixels once more, to carry
it back to the mean. That sum is (local mean - mean) times a per-channel
factor shared by the devices, and averaged over them it is zero (pmap's
devices hold equal shards, so the mean is the average of the local means):
the backward pass leaves it out. And autodiff of ``x * mul + shift`` sums
x * g and g in two passes over g; here they go through one ``pixel_sums``.
The training gradient at batch 8 (same-process A/B): 177.7 -> 160.9 ms with
the affine step, then 158 -> 150 ms with the statistics.

With ``axis_name`` (inside pmap), the statistics are averaged over the
devices, and the backward pass transposes those averages as autodiff does.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from aulunet_jax.ops.reductions import broadcast_channels, channel_sum, pixel_sums
from aulunet_jax.ops.switch import using_reference


def _check(x):
  if x.ndim != 4:
    raise ValueError(f"BatchNorm statistics take (N, H, W, C) arrays, got shape {x.shape}")


def _pmean(v, axis_name):
  return v if axis_name is None else lax.pmean(v, axis_name)


def batch_statistics_reference(x: jax.Array, axis_name: Optional[str] = None):
  _check(x)
  mean = _pmean(jnp.mean(x, axis=(0, 1, 2)), axis_name)
  var = _pmean(jnp.mean(jnp.square(x - mean), axis=(0, 1, 2)), axis_name)
  return mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _batch_statistics(x, axis_name):
  count = x.shape[0] * x.shape[1] * x.shape[2]
  mean = _pmean(channel_sum(x) / count, axis_name)
  centered = x - broadcast_channels(mean, x.shape)
  return mean, _pmean(channel_sum(centered, centered) / count, axis_name)


def _batch_statistics_fwd(x, axis_name):
  mean, var = _batch_statistics(x, axis_name)
  return (mean, var), (x, mean)


def _batch_statistics_bwd(axis_name, residuals, cotangents):
  x, mean = residuals
  count = x.shape[0] * x.shape[1] * x.shape[2]
  g_mean, g_var = (_pmean(g, axis_name) for g in cotangents)  # the transposes of the averages
  shape = x.shape
  dx = (x - broadcast_channels(mean, shape)) * broadcast_channels(2 * g_var / count, shape) + broadcast_channels(
      g_mean / count, shape)
  return (dx,)


_batch_statistics.defvjp(_batch_statistics_fwd, _batch_statistics_bwd)


def batch_statistics(x: jax.Array, axis_name: Optional[str] = None):
  """Per-channel mean and (biased) variance of (N, H, W, C) x over N, H, W,
  the variance in two passes (mean first), as torch.nn.BatchNorm2d; with
  ``axis_name`` averaged over the devices of that pmap axis."""
  if using_reference():
    return batch_statistics_reference(x, axis_name)
  _check(x)
  return _batch_statistics(x, axis_name)


def scale_shift_channels_reference(x: jax.Array, mul: jax.Array, shift: jax.Array) -> jax.Array:
  return x * mul + shift


@jax.custom_vjp
def _scale_shift_channels(x, mul, shift):
  return x * broadcast_channels(mul, x.shape) + broadcast_channels(shift, x.shape)


def _scale_shift_channels_fwd(x, mul, shift):
  return _scale_shift_channels(x, mul, shift), (x, mul)


def _scale_shift_channels_bwd(residuals, g):
  x, mul = residuals
  dmul, dshift = pixel_sums([(x, g), (g,)], per_image=False)
  return g * jnp.broadcast_to(mul, g.shape), dmul.astype(mul.dtype), dshift.astype(mul.dtype)


_scale_shift_channels.defvjp(_scale_shift_channels_fwd, _scale_shift_channels_bwd)


def scale_shift_channels(x: jax.Array, mul: jax.Array, shift: jax.Array) -> jax.Array:
  """x * mul + shift per channel of (N, H, W, C) x (mul, shift: (C,)): the
  affine step of BatchNorm."""
  if x.ndim != 4 or mul.shape != x.shape[-1:] or shift.shape != x.shape[-1:]:
    raise ValueError(f"scale_shift_channels takes (N, H, W, C) x and (C,) mul and shift, got {x.shape}, "
                     f"{mul.shape}, {shift.shape}")
  if using_reference():
    return scale_shift_channels_reference(x, mul, shift)
  return _scale_shift_channels(x, mul, shift)
