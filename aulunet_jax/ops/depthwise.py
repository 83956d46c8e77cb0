"""3x3 depthwise convolution with 'same' zero padding and a dilation.

PyTorch's ``nn.Conv2d(c, c, 3, padding=d, dilation=d, groups=c, bias=False)``
in NHWC. The kernel is stored as (3, 3, C).
"""

import jax
from jax import lax

from aulunet_jax.ops.switch import using_reference


def depthwise_conv3x3_reference(x: jax.Array, kernel: jax.Array, dilation: int = 1) -> jax.Array:
  """Plain version: one grouped convolution through XLA."""
  c = x.shape[-1]
  if kernel.shape != (3, 3, c):
    raise ValueError(f"depthwise kernel must have shape (3, 3, {c}), got {kernel.shape}")
  return lax.conv_general_dilated(
      x,
      kernel[:, :, None, :].astype(x.dtype),
      window_strides=(1, 1),
      padding=((dilation, dilation), (dilation, dilation)),
      rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=c,
  )


def depthwise_conv3x3(x: jax.Array, kernel: jax.Array, dilation: int = 1) -> jax.Array:
  """The model's depthwise convolution."""
  if using_reference():
    return depthwise_conv3x3_reference(x, kernel, dilation)
  return depthwise_conv3x3_reference(x, kernel, dilation)
