"""Classic U-Net (Ronneberger et al. 2015) as the paper's heavyweight baseline.

Base width 32 (32, 64, 128, 256, 512), two 3x3 conv + BN + ReLU per level,
2x2 max-pool down, 2x2 stride-2 transposed conv up, concatenated skips,
1x1 head with sigmoid. About 7.77 M parameters (the paper quotes 7.773 M).
"""

import functools
from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from aulunet_jax.models.layers import BatchNorm, Dtype, conv1x1, torch_kernel_init


class DoubleConv(nn.Module):
  features: int
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    for j in range(2):
      x = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, dtype=self.dtype,
                  kernel_init=torch_kernel_init, name=f"conv{j}")(x)
      x = nn.relu(BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name=f"bn{j}")(x, train))
    return x


class UNet(nn.Module):
  num_classes: int = 1
  widths: Sequence[int] = (32, 64, 128, 256, 512)
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    depth = len(self.widths) - 1
    _, h, w, _ = images.shape
    if h % 2**depth or w % 2**depth:
      raise ValueError(f"UNet needs height and width divisible by {2**depth}, got {h}x{w}")
    block = functools.partial(DoubleConv, axis_name=self.axis_name, dtype=self.dtype)
    x = images.astype(self.dtype)
    skips = []
    for i, f in enumerate(self.widths[:-1]):
      x = block(f, name=f"down{i}")(x, train)
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = block(self.widths[-1], name="bottleneck")(x, train)
    for i in reversed(range(depth)):
      f = self.widths[i]
      x = nn.ConvTranspose(f, (2, 2), strides=(2, 2), dtype=self.dtype, kernel_init=torch_kernel_init,
                           name=f"upconv{i}")(x)
      x = block(f, name=f"up{i}")(jnp.concatenate([skips[i], x], -1), train)
    logits = conv1x1(self.num_classes, use_bias=True, dtype=self.dtype, name="head")(x)
    return nn.sigmoid(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)))  # float32 at least
