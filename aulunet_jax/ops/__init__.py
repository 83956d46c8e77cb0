"""Numerical kernels used by the models.

Each operation has a plain reference implementation (straight from its
definition, via XLA primitives) and, where it pays, a faster formulation in
the same file. The tests hold the fast version against the plain one.
Inside ``with reference_ops():`` the models trace the plain versions (the
FLOP counter does this, so that it counts the model's arithmetic rather than
the arithmetic of a formulation chosen for speed).
"""

from aulunet_jax.ops.depthwise import depthwise_conv3x3
from aulunet_jax.ops.depthwise import depthwise_conv3x3_reference
from aulunet_jax.ops.resize import upsample2x_align_corners
from aulunet_jax.ops.resize import upsample2x_align_corners_reference
from aulunet_jax.ops.switch import reference_ops

__all__ = [
    "depthwise_conv3x3",
    "depthwise_conv3x3_reference",
    "reference_ops",
    "upsample2x_align_corners",
    "upsample2x_align_corners_reference",
]
