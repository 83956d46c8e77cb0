"""Residual Global Fusion (RGF), the bottleneck block.

  g   = tanh(W GAP(x))          (1x1 conv without bias, one value per channel)
  out = x + x * g

A global-context re-scaling in [0, 2] with an identity path, so the block
starts close to identity. Its ablation counterpart is the identity.
"""

import flax.linen as nn
import jax.numpy as jnp

from aulunet_jax.models.layers import conv1x1, Dtype, global_avg_pool


class RGF(nn.Module):
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    g = jnp.tanh(conv1x1(x.shape[-1], dtype=self.dtype, name="conv")(global_avg_pool(x)))
    return x + x * g[:, None, None, :]
