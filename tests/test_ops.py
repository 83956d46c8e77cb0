"""Each fast op against its plain reference (and PyTorch where it defines the op)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aulunet_jax import ops


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 16, 12, 5), (1, 1, 1, 2), (1, 2, 3, 1)])
def test_upsample_matches_reference_and_torch(shape):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  fast = ops.upsample2x_align_corners(x)
  ref = ops.upsample2x_align_corners_reference(x)
  assert fast.shape == (shape[0], 2 * shape[1], 2 * shape[2], shape[3])
  np.testing.assert_allclose(fast, ref, atol=1e-5)
  torch = pytest.importorskip("torch")
  t = torch.nn.functional.interpolate(torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2), scale_factor=2,
                                      mode="bilinear", align_corners=True).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(ref, t, atol=1e-5)
  # Corners coincide: the defining property of align_corners=True.
  np.testing.assert_allclose(fast[:, -1, -1], x[:, -1, -1], atol=1e-6)


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_depthwise_matches_reference_and_torch(dilation):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 10, 4))
  k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4))
  fast = ops.depthwise_conv3x3(x, k, dilation)
  np.testing.assert_allclose(fast, ops.depthwise_conv3x3_reference(x, k, dilation), atol=1e-5)
  torch = pytest.importorskip("torch")
  w = torch.from_numpy(np.asarray(k)).permute(2, 0, 1)[:, None]
  t = torch.nn.functional.conv2d(torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2), w, padding=dilation,
                                 dilation=dilation, groups=4).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(fast, t, atol=1e-5)


def test_depthwise_gradients_match_reference():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 11, 3))
  k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3))
  w = jax.random.normal(jax.random.PRNGKey(2), (2, 9, 11, 3))
  for d in (1, 2):
    g_fast = jax.grad(lambda x, k: jnp.sum(w * ops.depthwise_conv3x3(x, k, d)), (0, 1))(x, k)
    g_ref = jax.grad(lambda x, k: jnp.sum(w * ops.depthwise_conv3x3_reference(x, k, d)), (0, 1))(x, k)
    for a, b in zip(g_fast, g_ref):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_reference_switch_changes_what_is_traced():
  x = jnp.ones((1, 4, 4, 2))
  # A fresh function each time: jax caches traces per function.
  with ops.reference_ops():
    text = jax.jit(lambda v: ops.upsample2x_align_corners(v)).lower(x).as_text()
  assert "dot_general" not in text
  assert "dot_general" in jax.jit(lambda v: ops.upsample2x_align_corners(v)).lower(x).as_text()
