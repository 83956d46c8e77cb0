"""3x3 depthwise convolutions with 'same' zero padding and a dilation.

PyTorch's ``nn.Conv2d(c, c, 3, padding=d, dilation=d, groups=c, bias=False)``
in NHWC, kernel stored as (3, 3, C); and AKF's gated pair of them,

  mixed = dw(x, k_b, d_b) + alpha * (dw(x, k_a, d_a) - dw(x, k_b, d_b)),

with one gate value per image and channel (alpha: (N, C)).

XLA's CPU grouped convolution is slow for this shape (a 3x3 depthwise conv of
8x256x256x5 takes tens of milliseconds), and autodiff of any formulation
turns the kernel gradient into slow reductions. The fast versions are the
definition written out as shifted multiply-adds over a zero-padded copy of x,

  out[p] = sum_o x_pad[p + o] * c_o,

with coefficients c_o per shift o. The gated pair folds the gate into its
coefficients (c_o = alpha k_a + (1 - alpha) k_b, per image), and its two
centre taps share one shift: one pass of 17 multiply-adds instead of two
convolutions and a blend. The backward pass is written by hand:

  dx    = sum_o g_pad[p - o] * c_o      (the transposed correlation),
  dc_o  = sum over pixels of x_pad[p + o] * g[p]   (per image, or over the
          batch when c_o is shared),

element-wise work that XLA fuses plus one fast sum per shift; autodiff
carries dc_o back to the kernels and the gate.
"""

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
from jax import lax

from aulunet_jax.ops import reductions
from aulunet_jax.ops import fusion
from aulunet_jax.ops.fusion import materialize
from aulunet_jax.ops.switch import using_reference

Shift = Tuple[int, int]


def _check(x, kernel):
  if x.ndim != 4:
    raise ValueError(f"depthwise convolution expects NHWC input, got shape {x.shape}")
  c = x.shape[-1]
  if kernel.shape != (3, 3, c):
    raise ValueError(f"depthwise kernel must have shape (3, 3, {c}), got {kernel.shape}")


def depthwise_conv3x3_reference(x: jax.Array, kernel: jax.Array, dilation: int = 1) -> jax.Array:
  """Plain version: one grouped convolution through XLA."""
  _check(x, kernel)
  c = x.shape[-1]
  return lax.conv_general_dilated(
      x,
      kernel[:, :, None, :].astype(x.dtype),
      window_strides=(1, 1),
      padding=((dilation, dilation), (dilation, dilation)),
      rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=c,
  )


def mixed_depthwise_conv3x3_reference(x, kernel_a, kernel_b, alpha, dilation_a: int = 1, dilation_b: int = 2):
  """Plain version: two grouped convolutions blended by the gate."""
  a = depthwise_conv3x3_reference(x, kernel_a, dilation_a)
  b = depthwise_conv3x3_reference(x, kernel_b, dilation_b)
  return b + alpha[:, None, None, :].astype(x.dtype) * (a - b)


def _taps(dilation: int):
  """Shift (dy, dx) of each kernel tap (i, j)."""
  return {(i, j): ((i - 1) * dilation, (j - 1) * dilation) for i in range(3) for j in range(3)}


def _width(shifts):
  return max(max(abs(dy), abs(dx)) for dy, dx in shifts)


def _multiply_add(padded, shape, coefs, shifts):
  """sum_o window_o(padded) * coefs[o]; coefs[o] is (C,) or (N, C)."""
  width = _width(shifts)
  views = fusion.windows(padded, shape, [(width + dy, width + dx) for dy, dx in shifts])
  terms = [v * (c if c.ndim == 1 else c[:, None, None, :]) for v, c in zip(views, coefs)]
  return materialize(functools.reduce(jnp.add, terms))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shifted_multiply_add(x, coefs, shifts):
  return _multiply_add(fusion.pad(x, _width(shifts)), x.shape, coefs, shifts)


def _shifted_multiply_add_fwd(x, coefs, shifts):
  padded = fusion.pad(x, _width(shifts))
  return _multiply_add(padded, x.shape, coefs, shifts), (padded, coefs)


def _shifted_multiply_add_bwd(shifts, residuals, g):
  padded, coefs = residuals
  g = materialize(g)  # read at every shift
  width = _width(shifts)
  dx = _multiply_add(fusion.pad(g, width), g.shape, coefs, [(-dy, -dx) for dy, dx in shifts])
  # The kernel-gradient sums read x through the forward's padded copy.
  views = fusion.windows(padded, g.shape, [(width + dy, width + dx) for dy, dx in shifts])
  dcoefs = reductions.pixel_sums([(v, g) for v in views], per_image=coefs.ndim == 3)
  return dx, dcoefs.astype(coefs.dtype)


_shifted_multiply_add.defvjp(_shifted_multiply_add_fwd, _shifted_multiply_add_bwd)


def _accumulation_dtype(x):
  return jnp.promote_types(x.dtype, jnp.float32)  # bfloat16 input accumulates in float32, as XLA's conv does


def depthwise_conv3x3(x: jax.Array, kernel: jax.Array, dilation: int = 1) -> jax.Array:
  """The model's depthwise convolution."""
  if using_reference():
    return depthwise_conv3x3_reference(x, kernel, dilation)
  _check(x, kernel)
  acc = _accumulation_dtype(x)
  taps = _taps(dilation)
  coefs = jnp.stack([kernel[t] for t in taps]).astype(acc)
  return _shifted_multiply_add(x.astype(acc), coefs, tuple(taps.values())).astype(x.dtype)


def mixed_depthwise_conv3x3(x: jax.Array, kernel_a: jax.Array, kernel_b: jax.Array, alpha: jax.Array,
                            dilation_a: int = 1, dilation_b: int = 2) -> jax.Array:
  """dw(x, k_b, d_b) + alpha * (dw(x, k_a, d_a) - dw(x, k_b, d_b)), alpha (N, C)."""
  if using_reference():
    return mixed_depthwise_conv3x3_reference(x, kernel_a, kernel_b, alpha, dilation_a, dilation_b)
  _check(x, kernel_a)
  _check(x, kernel_b)
  if alpha.shape != (x.shape[0], x.shape[-1]):
    raise ValueError(f"the gate must be (N, C) = {(x.shape[0], x.shape[-1])}, got {alpha.shape}")
  acc = _accumulation_dtype(x)
  alpha = alpha.astype(acc)
  coef_by_shift = {}
  for kernel, weight, dilation in ((kernel_a, alpha, dilation_a), (kernel_b, 1 - alpha, dilation_b)):
    for tap, shift in _taps(dilation).items():
      term = weight * kernel[tap].astype(acc)
      coef_by_shift[shift] = coef_by_shift[shift] + term if shift in coef_by_shift else term
  shifts = tuple(coef_by_shift)
  coefs = jnp.stack([coef_by_shift[s] for s in shifts])
  return _shifted_multiply_add(x.astype(acc), coefs, shifts).astype(x.dtype)
