"""AULUNet (Rahman, Jung, Hammond, BMVC 2025), in flax.linen, NHWC.

Layout, following the official PyTorch model (module names kept, so that the
converter maps official state_dict keys one to one):

  enc0_conv   3x3 conv (3->c0, no bias) -> BN -> ReLU
  enc0_akfb   AKF(c0)                                          -> e0
  enc{i}_akfb AKF(c_{i-1}) on AvgPool2x2(e_{i-1}),  i = 1..5
  enc{i}_proj PointConv(c_{i-1} -> c_i)                        -> e_i
  bottleneck_rgfb  RGF(c5)                                     -> b
  up{i+1}     bilinear x2 (align_corners=True) -> PointConv(c_{i+1} -> c_i)
  skip{i}     LSG(c_i)(up, e_i)
  dec{i}_akfb AKF(c_i)                                         i = 4..0
  head        1x1 conv (c0 -> num_classes, bias) -> sigmoid

With the default widths (5, 10, 15, 25, 35, 60) it has 28,636 trainable
parameters, the paper's 0.029 M.
"""

import functools
from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from aulunet_jax import ops
from aulunet_jax.models.akf import AKF, PlainKernel
from aulunet_jax.models.layers import BatchNorm, Conv3x3, Dtype, PointConv, conv1x1
from aulunet_jax.models.lsg import LSG
from aulunet_jax.models.rgf import RGF

PAPER_WIDTHS = (5, 10, 15, 25, 35, 60)


class Up(nn.Module):
  """Bilinear x2 with align_corners=True, then PointConv."""
  features: int
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    return PointConv(self.features, upsample_input=True, axis_name=self.axis_name, dtype=self.dtype,
                     name="proj")(x, train)


class AULUNet(nn.Module):
  """The AULUNet family. Defaults give the paper's model (AULUNet-v3).

  Attributes:
    num_classes: output channels of the sigmoid head.
    widths: the six stage widths c0..c5.
    use_akf / use_rgf / use_lsg: ablation switches (paper Table 2); when off,
      AKF becomes one depthwise 3x3 + PointConv, RGF the identity, LSG plain
      addition of the encoder feature.
    akf_dilations: AKF's (local, dilated) dilation pair (paper Table 3).
    akf_gate: AKF gating strategy, 'channel' | 'equal' | 'spatial'.
    axis_name: pmap axis for cross-replica BatchNorm in training.
    dtype: compute dtype; parameters and BatchNorm statistics stay float32.
  """
  num_classes: int = 1
  widths: Sequence[int] = PAPER_WIDTHS
  use_akf: bool = True
  use_rgf: bool = True
  use_lsg: bool = True
  akf_dilations: Sequence[int] = (1, 2)
  akf_gate: str = "channel"
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    """images: (N, H, W, C) float, H and W divisible by 32. Returns (N, H, W, num_classes) in [0, 1]."""
    widths = tuple(self.widths)
    if len(widths) != 6:
      raise ValueError(f"AULUNet takes 6 stage widths, got {widths}")
    if images.ndim != 4:
      raise ValueError(f"AULUNet expects NHWC images, got shape {images.shape}")
    _, h, w, _ = images.shape
    if h % 32 or w % 32:
      raise ValueError(f"AULUNet needs height and width divisible by 32 (5 poolings), got {h}x{w}")

    pointconv = functools.partial(PointConv, axis_name=self.axis_name, dtype=self.dtype)
    if self.use_akf:
      kernel_block = functools.partial(AKF, dilations=tuple(self.akf_dilations), gate=self.akf_gate,
                                       axis_name=self.axis_name, dtype=self.dtype)
    else:
      kernel_block = functools.partial(PlainKernel, axis_name=self.axis_name, dtype=self.dtype)

    x = images.astype(self.dtype)
    x = Conv3x3(widths[0], dtype=self.dtype, name="enc0_conv")(x)
    x = nn.relu(BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name="enc0_bn")(x, train))
    skips = [kernel_block(name="enc0_akfb")(x, train)]
    for i in range(1, 6):
      x = kernel_block(name=f"enc{i}_akfb")(ops.avg_pool2x2(skips[-1]), train)
      skips.append(pointconv(widths[i], name=f"enc{i}_proj")(x, train))

    x = skips[5]
    if self.use_rgf:
      x = RGF(dtype=self.dtype, name="bottleneck_rgfb")(x)

    for i in range(4, -1, -1):
      x = Up(widths[i], axis_name=self.axis_name, dtype=self.dtype, name=f"up{i + 1}")(x, train)
      if self.use_lsg:
        x = LSG(axis_name=self.axis_name, dtype=self.dtype, name=f"skip{i}")(x, skips[i], train)
      else:
        x = x + skips[i]
      x = kernel_block(name=f"dec{i}_akfb")(x, train)

    logits = conv1x1(self.num_classes, use_bias=True, dtype=self.dtype, name="head")(x)
    return nn.sigmoid(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)))  # float32 at least
