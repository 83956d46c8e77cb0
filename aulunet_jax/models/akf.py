"""Adaptive Kernel Fusion (AKF).

Two depthwise 3x3 convolutions look at the same input with a small and a
large receptive field (dilations 1 and 2 by default); a gate decides, per
channel from global context, how much of each to keep:

  alpha = sigmoid(W_g GAP(x) + b_g)
  fused = alpha * DW_d1(x) + (1 - alpha) * DW_d2(x)
  out   = PointConv(fused)

``gate`` selects the gating strategy for the paper's ablation:
  'channel' (default, the paper's): one alpha per channel from GAP(x);
  'equal': a fixed alpha = 0.5 (no parameters);
  'spatial': one alpha per pixel, sigmoid(1x1 conv C->1 with bias on x).
``PlainKernel`` is the ablation's non-adaptive counterpart: one depthwise
3x3 then PointConv.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from aulunet_jax import ops
from aulunet_jax.models.layers import conv1x1, DepthwiseConv3x3, Dtype, PointConv, global_avg_pool

GATES = ("channel", "equal", "spatial")


class AKF(nn.Module):
  dilations: Sequence[int] = (1, 2)
  gate: str = "channel"
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if self.gate not in GATES:
      raise ValueError(f"AKF gate must be one of {GATES}, got {self.gate!r}")
    if len(self.dilations) != 2:
      raise ValueError(f"AKF takes two dilations (local, dilated), got {tuple(self.dilations)}")
    n, c = x.shape[0], x.shape[-1]
    dw_local = DepthwiseConv3x3(c, self.dilations[0], dtype=self.dtype, name="dw_local")
    dw_dilated = DepthwiseConv3x3(c, self.dilations[1], dtype=self.dtype, name="dw_dilated")
    if self.gate == "spatial":
      alpha = nn.sigmoid(conv1x1(1, use_bias=True, dtype=self.dtype, name="gate_conv")(x))
      dilated = dw_dilated(x)
      fused = dilated + alpha * (dw_local(x) - dilated)
    else:
      if self.gate == "channel":
        # Computed on (N, C): keeps the gate a plain dense layer, which also
        # exports cleanly to TFLite.
        alpha = nn.sigmoid(conv1x1(c, use_bias=True, dtype=self.dtype, name="gate_conv")(global_avg_pool(x)))
      else:
        alpha = jnp.full((n, c), 0.5, self.dtype)
      # One gate value per image and channel: both convolutions and the blend
      # are one op (see ops.mixed_depthwise_conv3x3).
      fused = ops.mixed_depthwise_conv3x3(x.astype(self.dtype), dw_local.kernel.astype(self.dtype),
                                          dw_dilated.kernel.astype(self.dtype), alpha, *self.dilations)
    return PointConv(c, axis_name=self.axis_name, dtype=self.dtype, name="fuse_conv")(fused, train)


class PlainKernel(nn.Module):
  """Ablation counterpart of AKF: a single depthwise 3x3 and PointConv."""
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = DepthwiseConv3x3(x.shape[-1], 1, dtype=self.dtype, name="dw_local")(x)
    return PointConv(x.shape[-1], axis_name=self.axis_name, dtype=self.dtype, name="fuse_conv")(y, train)
