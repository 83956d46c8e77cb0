"""Numerical kernels used by the models.

Each operation has a plain reference implementation (straight from its
definition, via XLA primitives) and a faster formulation in the same file,
with a hand-written backward pass where autodiff of the fast forward would be
slow. The tests hold the fast version, values and gradients, against the
plain one. Inside ``with reference_ops():`` the models trace the plain
versions (the FLOP counter does this, so that it counts the model's
arithmetic rather than the arithmetic of a formulation chosen for speed).
"""

from aulunet_jax.ops.batch_norm import batch_statistics
from aulunet_jax.ops.batch_norm import batch_statistics_reference
from aulunet_jax.ops.batch_norm import scale_shift_channels
from aulunet_jax.ops.batch_norm import scale_shift_channels_reference
from aulunet_jax.ops.conv3x3 import conv3x3
from aulunet_jax.ops.conv3x3 import conv3x3_reference
from aulunet_jax.ops.depthwise import depthwise_conv3x3
from aulunet_jax.ops.depthwise import depthwise_conv3x3_reference
from aulunet_jax.ops.depthwise import mixed_depthwise_conv3x3
from aulunet_jax.ops.depthwise import mixed_depthwise_conv3x3_reference
from aulunet_jax.ops.fusion import materialize
from aulunet_jax.ops.pointwise import pointwise_conv
from aulunet_jax.ops.pointwise import pointwise_conv_reference
from aulunet_jax.ops.pool import avg_pool2x2
from aulunet_jax.ops.pool import avg_pool2x2_reference
from aulunet_jax.ops.reductions import broadcast_channels
from aulunet_jax.ops.reductions import broadcast_spatial
from aulunet_jax.ops.reductions import channel_sum
from aulunet_jax.ops.reductions import channel_sum_reference
from aulunet_jax.ops.reductions import pixel_sums
from aulunet_jax.ops.reductions import pixel_sums_reference
from aulunet_jax.ops.reductions import spatial_sum
from aulunet_jax.ops.reductions import spatial_sum_reference
from aulunet_jax.ops.resize import pointwise_conv_of_upsampled
from aulunet_jax.ops.resize import pointwise_conv_of_upsampled_reference
from aulunet_jax.ops.resize import upsample2x_align_corners
from aulunet_jax.ops.resize import upsample2x_align_corners_reference
from aulunet_jax.ops.switch import reference_ops

__all__ = [
    "avg_pool2x2",
    "avg_pool2x2_reference",
    "batch_statistics",
    "batch_statistics_reference",
    "broadcast_channels",
    "broadcast_spatial",
    "channel_sum",
    "channel_sum_reference",
    "conv3x3",
    "conv3x3_reference",
    "depthwise_conv3x3",
    "depthwise_conv3x3_reference",
    "materialize",
    "mixed_depthwise_conv3x3",
    "mixed_depthwise_conv3x3_reference",
    "pixel_sums",
    "pixel_sums_reference",
    "pointwise_conv",
    "pointwise_conv_reference",
    "pointwise_conv_of_upsampled",
    "pointwise_conv_of_upsampled_reference",
    "reference_ops",
    "scale_shift_channels",
    "scale_shift_channels_reference",
    "spatial_sum",
    "spatial_sum_reference",
    "upsample2x_align_corners",
    "upsample2x_align_corners_reference",
]
