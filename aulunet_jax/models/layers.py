"""Building blocks shared by the models: PyTorch-faithful BatchNorm,
PyTorch-default initialisers, 1x1 / 3x3 / depthwise 3x3 convolutions,
PointConv and global average pooling. Their arithmetic goes through ``aulunet_jax.ops``
(fast formulations with plain references)."""

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


_MATERIALIZE_FROM_CHANNELS = 10


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
      count = math.prod(x.shape[:-1])
      cross_replica = self.axis_name is not None and not self.is_initializing()
      mean, var = ops.batch_statistics(xf, self.axis_name if cross_replica else None)
      if cross_replica:
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
    x = x.astype(self.dtype)
    y = ops.scale_shift_channels(x, mul.astype(self.dtype), shift.astype(self.dtype))
    # In inference the affine step is computed into memory: its readers (the
    # padded copies, pooling, 1x1 convolutions, which read each pixel once
    # per output channel) then read one array instead of x and two
    # per-channel copies. Batch-8 inference 19.3 -> 18.5 ms, batch 1
    # 2.87 -> 2.77 ms (same-process A/B). Not with fewer than
    # _MATERIALIZE_FROM_CHANNELS channels (AULUNet's full resolution): there
    # the skip gate's loop then compiled to slower code (1.3 -> 1.8 ms), and
    # leaving them fused gained another 0.3-0.4 ms, 1-4 % at batch 1. Not in
    # training, whose backward pass reads x: the extra write cost the step
    # 118.5 -> 129.1 ms.
    if train or c < _MATERIALIZE_FROM_CHANNELS:
      return y
    return ops.materialize(y)


class Conv1x1(nn.Module):
  """1x1 convolution over the last axis of (N, H, W, Cin) or (N, Cin).

  ``x`` may also be a sequence of arrays, convolved as their concatenation
  along channels (without writing the concatenation). Parameters as nn.Dense
  keeps them (kernel (Cin, Cout), bias (Cout,)), initialised as
  torch.nn.Conv2d does.
  """
  features: int
  use_bias: bool = False
  upsample_input: bool = False  # convolve the x2 bilinear (align_corners) upsampling of x
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    parts = tuple(x) if isinstance(x, (list, tuple)) else (x,)
    fan_in = sum(p.shape[-1] for p in parts)
    kernel = self.param("kernel", torch_kernel_init, (fan_in, self.features))
    parts = tuple(p.astype(self.dtype) for p in parts)
    if self.upsample_input:
      (x,) = parts
      y = ops.pointwise_conv_of_upsampled(x, kernel.astype(self.dtype))
    else:
      y = ops.pointwise_conv(parts, kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", torch_bias_init(fan_in), (self.features,)).astype(self.dtype)
      y = y + (ops.broadcast_channels(bias, y.shape) if y.ndim == 4 else bias)
    return y


def conv1x1(features: int, use_bias: bool = False, upsample_input: bool = False, dtype: Dtype = jnp.float32,
            name: Optional[str] = None) -> Conv1x1:
  return Conv1x1(features, use_bias=use_bias, upsample_input=upsample_input, dtype=dtype, name=name)


class Conv3x3(nn.Module):
  """3x3 convolution, stride 1, zero padding 1, no bias; kernel (3, 3, Cin,
  Cout) as nn.Conv keeps it, initialised as torch.nn.Conv2d does."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", torch_kernel_init, (3, 3, x.shape[-1], self.features))
    return ops.conv3x3(x.astype(self.dtype), kernel.astype(self.dtype))


class PointConv(nn.Module):
  """1x1 conv (no bias) -> BatchNorm -> ReLU (the reference's PointConv).

  With ``upsample_input`` the input is first upsampled x2 (bilinear,
  align_corners=True), as in the decoder's up-projections.
  """
  features: int
  upsample_input: bool = False
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = conv1x1(self.features, upsample_input=self.upsample_input, dtype=self.dtype, name="conv")(x)
    x = BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name="bn")(x, train)
    return nn.relu(x)


class DepthwiseConv3x3(nn.Module):
  """Depthwise 3x3 conv without bias, 'same' padding, given dilation.

  ``kernel`` (3, 3, C) is also read directly by blocks that fuse several
  depthwise convolutions into one op (AKF).
  """
  features: int
  dilation: int = 1
  dtype: Dtype = jnp.float32

  def setup(self):
    # Depthwise: fan_in = 1 * 3 * 3.
    self.kernel = self.param("kernel", nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform",
                                                                        in_axis=(0, 1), out_axis=2),
                             (3, 3, self.features))

  def __call__(self, x):
    return ops.depthwise_conv3x3(x.astype(self.dtype), self.kernel.astype(self.dtype), self.dilation)


def global_avg_pool(x):
  """(N, H, W, C) -> (N, C), averaged in float32."""
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return (ops.spatial_sum(xf) / (x.shape[1] * x.shape[2])).astype(x.dtype)
