"""2x2 average pooling with stride 2 (PyTorch's ``nn.AvgPool2d(2, 2)``).

The plain version averages a (N, H/2, 2, W/2, 2, C) reshape, which XLA's CPU
backend reduces slowly with few channels. The fast one adds the four strided
views element-wise, and its backward pass spreads g / 4 over each 2x2 block
with a broadcast (autodiff of the strided views would scatter through four
padded copies instead).

The pooled array is computed into memory: AKF reads it twice (its gate's
global average and its padded copy), each time through the four strided
views, and the sums over it could not vectorise (batch-8 inference 24.7 ->
23.4 ms, same-process A/B).
"""

import jax
import jax.numpy as jnp

from aulunet_jax.ops.fusion import materialize
from aulunet_jax.ops.switch import using_reference


def _check(x):
  if x.ndim != 4:
    raise ValueError(f"2x2 average pooling expects NHWC input, got shape {x.shape}")
  if x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f"2x2 average pooling needs even height and width, got {x.shape[1]}x{x.shape[2]}")


def avg_pool2x2_reference(x: jax.Array) -> jax.Array:
  _check(x)
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


@jax.custom_vjp
def _avg_pool(x):
  return materialize((x[:, 0::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) * 0.25)


def _avg_pool_fwd(x):
  return _avg_pool(x), None


def _avg_pool_bwd(_, g):
  n, h, w, c = g.shape
  spread = jnp.broadcast_to((g * 0.25)[:, :, None, :, None, :], (n, h, 2, w, 2, c))
  return (spread.reshape(n, 2 * h, 2 * w, c),)


_avg_pool.defvjp(_avg_pool_fwd, _avg_pool_bwd)


def avg_pool2x2(x: jax.Array) -> jax.Array:
  if using_reference():
    return avg_pool2x2_reference(x)
  _check(x)
  return _avg_pool(x)
