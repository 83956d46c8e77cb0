"""Each fast op against its plain reference (and PyTorch where it defines the
op): values, and gradients through the hand-written backward passes.

The reference is traced inside ``ops.reference_ops()``, each side from a
fresh function object so that jax reuses no trace of the other.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aulunet_jax import ops
from aulunet_jax.ops import fusion


def _rand(seed, shape, dtype=jnp.float32):
  return jax.random.normal(jax.random.PRNGKey(seed), shape, dtype)


def _check_against_reference(fn, args, atol=1e-5, rtol=1e-5):
  """fn's values and the gradients of a random projection of them, fast vs
  reference."""
  argnums = tuple(range(len(args)))

  def value_and_grads(*a):
    out = fn(*a)
    weights = _rand(99, out.shape)
    return out, jax.grad(lambda *b: jnp.sum(weights * fn(*b)), argnums)(*a)

  out, grads = jax.jit(lambda *a: value_and_grads(*a))(*args)
  with ops.reference_ops():
    ref_out, ref_grads = jax.jit(lambda *a: value_and_grads(*a))(*args)
  np.testing.assert_allclose(out, ref_out, atol=atol, rtol=rtol)
  for i, (g, r) in enumerate(zip(grads, ref_grads)):
    scale = float(jnp.abs(r).max()) or 1.0
    np.testing.assert_allclose(g / scale, r / scale, atol=atol, rtol=0, err_msg=f"gradient of argument {i}")
  return out


SHAPES = [(2, 12, 10, 4), (1, 9, 11, 3), (3, 16, 16, 5), (1, 1, 1, 2)]


@pytest.mark.parametrize("shape,dilation", list(zip(SHAPES, [1, 2, 3, 1])))
def test_depthwise_matches_reference_and_torch(shape, dilation):
  x, k = _rand(0, shape), _rand(1, (3, 3, shape[-1]))
  out = _check_against_reference(lambda x, k: ops.depthwise_conv3x3(x, k, dilation), (x, k))
  torch = pytest.importorskip("torch")
  w = torch.from_numpy(np.array(k)).permute(2, 0, 1)[:, None]
  t = torch.nn.functional.conv2d(torch.from_numpy(np.array(x)).permute(0, 3, 1, 2), w, padding=dilation,
                                 dilation=dilation, groups=shape[-1]).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(out, t, atol=1e-5)


@pytest.mark.parametrize("shape,dilations", list(zip(SHAPES, [(1, 2), (1, 3), (2, 3), (2, 2)])))
def test_mixed_depthwise_matches_reference(shape, dilations):
  n, c = shape[0], shape[-1]
  args = (_rand(0, shape), _rand(1, (3, 3, c)), _rand(2, (3, 3, c)), jax.random.uniform(jax.random.PRNGKey(3), (n, c)))
  _check_against_reference(lambda x, a, b, alpha: ops.mixed_depthwise_conv3x3(x, a, b, alpha, *dilations), args)


def test_mixed_depthwise_is_the_gated_blend_of_two_convolutions():
  x, a, b = _rand(0, (2, 8, 8, 3)), _rand(1, (3, 3, 3)), _rand(2, (3, 3, 3))
  alpha = jnp.array([[0.0, 1.0, 0.25], [1.0, 0.5, 0.0]])
  mixed = ops.mixed_depthwise_conv3x3(x, a, b, alpha, 1, 2)
  local, dilated = ops.depthwise_conv3x3(x, a, 1), ops.depthwise_conv3x3(x, b, 2)
  np.testing.assert_allclose(mixed, dilated + alpha[:, None, None, :] * (local - dilated), atol=1e-5)
  np.testing.assert_allclose(mixed[0, ..., 0], dilated[0, ..., 0], atol=1e-6)  # alpha = 0: dilated only
  np.testing.assert_allclose(mixed[0, ..., 1], local[0, ..., 1], atol=1e-6)  # alpha = 1: local only


# (20, 10) reads its inputs from memory; (20, 30) takes the matrix-product path.
@pytest.mark.parametrize("cin,cout", [(5, 5), (10, 5), (3, 1), (20, 10), (20, 30)])
def test_pointwise_matches_reference(cin, cout):
  _check_against_reference(ops.pointwise_conv, (_rand(0, (2, 8, 6, cin)), _rand(1, (cin, cout))))


def test_pointwise_of_a_concatenation_never_concatenates():
  d, e, k = _rand(0, (2, 8, 8, 5)), _rand(1, (2, 8, 8, 5)), _rand(2, (10, 5))
  out = _check_against_reference(lambda d, e, k: ops.pointwise_conv((d, e), k), (d, e, k))
  np.testing.assert_allclose(out, ops.pointwise_conv_reference(jnp.concatenate([d, e], -1), k), atol=1e-5)
  text = jax.jit(lambda d, e, k: ops.pointwise_conv((d, e), k)).lower(d, e, k).as_text()
  assert "concatenate" not in text
  with pytest.raises(ValueError, match=r"\(10, Cout\) kernel"):
    ops.pointwise_conv((d, e), _rand(2, (5, 5)))


@pytest.mark.parametrize("shape", [(2, 8, 8, 10), (1, 4, 6, 3), (1, 1, 1, 4)])
def test_pointwise_of_upsampled_equals_pointwise_after_upsampling(shape):
  x, k = _rand(0, shape), _rand(1, (shape[-1], 5))
  out = _check_against_reference(ops.pointwise_conv_of_upsampled, (x, k))
  assert out.shape == (shape[0], 2 * shape[1], 2 * shape[2], 5)


@pytest.mark.parametrize("shape", [(2, 12, 10, 3), (1, 5, 7, 2)])
def test_conv3x3_matches_reference_and_torch(shape):
  x, k = _rand(0, shape), _rand(1, (3, 3, shape[-1], 5))
  out = _check_against_reference(ops.conv3x3, (x, k))
  torch = pytest.importorskip("torch")
  w = torch.from_numpy(np.array(k)).permute(3, 2, 0, 1)
  t = torch.nn.functional.conv2d(torch.from_numpy(np.array(x)).permute(0, 3, 1, 2), w, padding=1)
  np.testing.assert_allclose(out, t.permute(0, 2, 3, 1).numpy(), atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 1, 1, 2), (1, 2, 3, 1)])
def test_upsample_matches_reference_and_torch(shape):
  x = _rand(0, shape)
  fast = _check_against_reference(ops.upsample2x_align_corners, (x,))
  assert fast.shape == (shape[0], 2 * shape[1], 2 * shape[2], shape[3])
  torch = pytest.importorskip("torch")
  t = torch.nn.functional.interpolate(torch.from_numpy(np.array(x)).permute(0, 3, 1, 2), scale_factor=2,
                                      mode="bilinear", align_corners=True).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(fast, t, atol=1e-5)
  # Corners coincide: the defining property of align_corners=True.
  np.testing.assert_allclose(fast[:, -1, -1], x[:, -1, -1], atol=1e-6)


def test_avg_pool_matches_reference():
  _check_against_reference(ops.avg_pool2x2, (_rand(0, (2, 8, 6, 5)),))
  with pytest.raises(ValueError, match="even height and width"):
    ops.avg_pool2x2(_rand(0, (1, 5, 4, 2)))


@pytest.mark.parametrize("shape", [(8, 32, 16, 5), (1, 11, 9, 3), (3, 1, 1, 2)])
def test_pixel_sums_match_reference(shape):
  n, c = shape[0], shape[-1]

  def sums(a, b, d):
    many = [(a,), (a, b), (b, d)] * 5 + [(d,), (a, b, d)]  # 17 terms: three fused groups, as AKF's
    per_image, per_channel = ops.pixel_sums(many, per_image=True), ops.pixel_sums(many, per_image=False)
    assert per_image.shape == (17, n, c) and per_channel.shape == (17, c)
    return jnp.concatenate([ops.channel_sum(a), ops.channel_sum(a, b), ops.spatial_sum(a).ravel(),
                            ops.spatial_sum(a, d).ravel(), per_image.ravel(), per_channel.ravel()])

  _check_against_reference(sums, (_rand(0, shape), _rand(1, shape), _rand(2, shape)), atol=1e-4)


def test_broadcasts_transpose_to_the_sums():
  v, s, g = _rand(0, (5,)), _rand(1, (2, 5)), _rand(2, (2, 4, 6, 5))
  _check_against_reference(lambda v: ops.broadcast_channels(v, g.shape) * g, (v,))
  _check_against_reference(lambda s: ops.broadcast_spatial(s, g.shape) * g, (s,))
  with pytest.raises(ValueError, match="takes \\(C,\\)"):
    ops.broadcast_channels(s, g.shape)


def test_scale_shift_matches_reference():
  x, mul, shift = _rand(0, (2, 6, 5, 3)), _rand(1, (3,)), _rand(2, (3,))
  _check_against_reference(ops.scale_shift_channels, (x, mul, shift))
  with pytest.raises(ValueError, match="scale_shift_channels takes"):
    ops.scale_shift_channels(x, mul[:2], shift)


def test_batch_statistics_match_reference():
  x = _rand(0, (2, 6, 5, 3)) * 3 + 1
  _check_against_reference(lambda x: jnp.stack(ops.batch_statistics(x)), (x,))
  with pytest.raises(ValueError, match="take \\(N, H, W, C\\)"):
    ops.batch_statistics(x[0])


def test_cross_replica_batch_statistics_match_reference():
  """Averaged over a named axis (vmap stands in for pmap's devices; the
  gradient is taken per device, inside it, as the training step does), with
  shards of different means, so that the local means differ from the mean."""
  x = _rand(0, (2, 2, 4, 5, 3)) + jnp.arange(2.0)[:, None, None, None, None] * 4
  weights = _rand(1, (2, 2, 3))

  def per_device(x, w):
    stats = lambda x: jnp.stack(ops.batch_statistics(x, "devices"))
    return stats(x), jax.grad(lambda x: jnp.sum(w * stats(x)))(x)

  run = jax.jit(jax.vmap(per_device, axis_name="devices"))
  stats, grads = run(x, weights)
  with ops.reference_ops():
    ref_stats, ref_grads = jax.jit(jax.vmap(lambda x, w: per_device(x, w), axis_name="devices"))(x, weights)
  np.testing.assert_allclose(stats, ref_stats, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grads, ref_grads, rtol=1e-5, atol=1e-6)
  whole = jnp.stack(ops.batch_statistics(x.reshape(4, 4, 5, 3)))
  np.testing.assert_allclose(stats[0], whole, rtol=1e-5)


def test_tiled_channels_repeat_the_vector():
  v = _rand(0, (3,))
  np.testing.assert_array_equal(jax.jit(fusion.tiled_channels, static_argnums=1)(v, 4), np.tile(v, (4, 1)))


def test_materialize_is_the_identity():
  x = _rand(0, (2, 6, 5, 3))
  np.testing.assert_array_equal(ops.materialize(x), x)
  np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(ops.materialize(x) * x))(x), 2 * x)


@pytest.mark.parametrize("shape,width", [((2, 6, 5, 3), 1), ((1, 4, 3, 2), 2), ((1, 2, 1, 2), 2), ((2, 3, 4, 1), 0)])
def test_windows_are_slices_of_the_zero_padded_input(shape, width):
  """Including windows wider than the image, against slices of np.pad."""
  x = _rand(0, shape)
  n, h, w, c = shape
  offsets = [(i, j) for i in range(2 * width + 1) for j in range(2 * width + 1)]
  views = jax.jit(lambda x: fusion.windows(fusion.pad(x, width), x.shape, offsets))(x)
  padded = np.pad(np.asarray(x), ((0, 0), (width, width), (width, width), (0, 0)))
  for (i, j), view in zip(offsets, views):
    np.testing.assert_array_equal(view, padded[:, i:i + h, j:j + w], err_msg=f"window {(i, j)}")


def test_bfloat16_inputs_keep_their_dtype():
  x = _rand(0, (1, 8, 8, 5)).astype(jnp.bfloat16)
  k = _rand(1, (3, 3, 5))
  assert ops.depthwise_conv3x3(x, k.astype(jnp.bfloat16)).dtype == jnp.bfloat16
  assert ops.pointwise_conv(x, _rand(1, (5, 5)).astype(jnp.bfloat16)).dtype == jnp.bfloat16
  assert ops.mixed_depthwise_conv3x3(x, k, k, jnp.full((1, 5), 0.5)).dtype == jnp.bfloat16


def test_reference_switch_changes_what_is_traced():
  x, k = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2))
  # A fresh function each time: jax caches traces per function.
  with ops.reference_ops():
    text = jax.jit(lambda v: ops.depthwise_conv3x3(v, k)).lower(x).as_text()
  assert "convolution" in text
  assert "convolution" not in jax.jit(lambda v: ops.depthwise_conv3x3(v, k)).lower(x).as_text()
