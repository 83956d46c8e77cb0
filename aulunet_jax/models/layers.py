"""Building blocks shared by the models: PyTorch-faithful BatchNorm,
PyTorch-default initialisers, PointConv and the depthwise 3x3 convolution."""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from aulunet_jax import ops

Dtype = Any

# torch.nn.Conv2d / Linear default init: kaiming_uniform(a=sqrt(5)) for the
# weight, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for bias.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class BatchNorm(nn.Module):
  """BatchNorm over the last axis, as torch.nn.BatchNorm2d computes it.

  Differences from flax.linen.BatchNorm that matter for parity with the
  reference: batch variance is computed in two passes (mean first), and the
  running variance is updated with the *unbiased* batch variance
  (n / (n - 1)), as PyTorch does. ``momentum`` is in PyTorch's convention:
  running = (1 - momentum) * running + momentum * batch.

  With ``axis_name`` set and ``train=True`` inside pmap, the statistics are
  averaged across devices (cross-replica / synchronised BatchNorm).
  Statistics are kept and computed in float32 whatever the compute dtype.
  """
  momentum: float = 0.1
  epsilon: float = 1e-5
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    if train:
      xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
      axes = tuple(range(x.ndim - 1))
      count = math.prod(x.shape[:-1])
      cross_replica = self.axis_name is not None and not self.is_initializing()
      mean = jnp.mean(xf, axes)
      if cross_replica:
        mean = lax.pmean(mean, self.axis_name)
      var = jnp.mean(jnp.square(xf - mean), axes)
      if cross_replica:
        var = lax.pmean(var, self.axis_name)
        count = count * lax.psum(1, self.axis_name)
      if not self.is_initializing():
        m = self.momentum
        unbiased = var * (count / jnp.maximum(count - 1, 1))
        running_mean.value = (1 - m) * running_mean.value + m * mean
        running_var.value = (1 - m) * running_var.value + m * unbiased
    else:
      mean, var = running_mean.value, running_var.value
    mul = scale * lax.rsqrt(var + self.epsilon)
    shift = bias - mean * mul
    return (x * mul.astype(self.dtype) + shift.astype(self.dtype)).astype(self.dtype)


def conv1x1(features: int, fan_in: int, use_bias: bool = False, dtype: Dtype = jnp.float32,
            name: Optional[str] = None) -> nn.Dense:
  """1x1 convolution as a matmul over channels; kernel stored as (Cin, Cout)."""
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, kernel_init=torch_kernel_init,
                  bias_init=torch_bias_init(fan_in), name=name)


class PointConv(nn.Module):
  """1x1 conv (no bias) -> BatchNorm -> ReLU (the reference's PointConv)."""
  features: int
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = conv1x1(self.features, x.shape[-1], dtype=self.dtype, name="conv")(x)
    x = BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name="bn")(x, train)
    return nn.relu(x)


class DepthwiseConv3x3(nn.Module):
  """Depthwise 3x3 conv without bias, 'same' padding, given dilation."""
  dilation: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    # Depthwise: fan_in = 1 * 3 * 3.
    kernel = self.param("kernel", nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform",
                                                                   in_axis=(0, 1), out_axis=2), (3, 3, c))
    return ops.depthwise_conv3x3(x.astype(self.dtype), kernel.astype(self.dtype), self.dilation)


def global_avg_pool(x):
  """(N, H, W, C) -> (N, C), averaged in float32."""
  return jnp.mean(x.astype(jnp.promote_types(x.dtype, jnp.float32)), axis=(1, 2)).astype(x.dtype)


def avg_pool2x2(x):
  n, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f"2x2 average pooling needs even height and width, got {h}x{w}")
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
