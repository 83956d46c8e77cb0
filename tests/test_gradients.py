"""Gradient parity with PyTorch: every parameter gradient of the BCE + Dice
loss in train mode (batch statistics), for the library's default (fast) ops
and for the plain reference ops.

Exactness is checked in float64, where both sides compute the same function
without round-off: each parameter's gradient must match PyTorch's to a
relative error far below 1e-4. In float32 a per-parameter bound of 1e-4 is
not a property of the implementation but of the input: a few activations sit
within round-off of a ReLU kink, and which side of it they land on moves
small gradients (a BatchNorm bias, say) by up to 3e-3 relative. Measured on
this test's case with the images perturbed by 1e-4 (of a 0..255 range): the
worst per-parameter error against PyTorch float64 swings between 2e-5 and
3e-3 for our fast ops, our reference ops and PyTorch's own float32 alike, and
the error of the whole gradient between 3e-6 and 2e-4. So in float32 the
whole gradient is held to 1e-3.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import aulunet_jax  # noqa: E402
from aulunet_jax import convert, losses, ops  # noqa: E402
from aulunet_jax.torch_reference import TorchAULUNet, randomize  # noqa: E402

FLOAT64_TOLERANCE = 1e-9  # per parameter tensor
FLOAT32_TOLERANCE = 1e-3  # the whole gradient


@pytest.fixture(scope="module")
def case():
  """Random weights, images and blob masks, and PyTorch's float64 loss and
  gradients (as float64 arrays in the flax layout, keyed by flax path)."""
  torch.set_num_threads(2)
  model = randomize(TorchAULUNet(), seed=1)
  rng = np.random.RandomState(1)
  images = rng.uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
  yy, xx = np.mgrid[:128, :128]
  masks = np.stack([((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2) for cy, cx, r in [(60, 70, 30), (40, 50, 45)]])
  masks = masks[..., None].astype(np.float32)

  t64 = copy.deepcopy(model).double().train()
  x = torch.from_numpy(images).double().permute(0, 3, 1, 2)
  y = torch.from_numpy(masks).double().permute(0, 3, 1, 2)
  probs = t64(x)
  bce = torch.nn.functional.binary_cross_entropy(probs, y)
  dice = (2 * (probs * y).sum((1, 2, 3)) + 1) / (probs.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
  loss = bce + (1 - dice.mean())
  loss.backward()
  grads = {name: p.grad.detach().numpy() for name, p in t64.named_parameters()}
  expected = {("params",) + path[1:]: convert._torch_to_flax(grads[key], shape)
              for path, key, shape in convert.key_map() if path[0] == "params"}
  return convert.from_torch_state_dict(model.state_dict()), images, masks, float(loss.detach()), expected


def _loss_and_grads(variables, images, masks, dtype):
  model = aulunet_jax.AULUNet(dtype=dtype)
  variables = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), variables)

  def loss_fn(params):
    probs, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, images.astype(dtype),
                           train=True, mutable=["batch_stats"])
    return losses.bce_dice_loss(probs, masks.astype(dtype))

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables["params"])
  flat = {("params",) + tuple(k.key for k in path): np.asarray(g, np.float64)
          for path, g in jax.tree_util.tree_leaves_with_path(grads)}
  return float(loss), flat


@pytest.mark.parametrize("reference", [False, True], ids=["fast_ops", "reference_ops"])
def test_float64_gradients_match_pytorch_per_parameter(case, reference):
  variables, images, masks, expected_loss, expected = case
  with jax.enable_x64(True), ops.reference_ops(reference):
    loss, grads = _loss_and_grads(variables, jnp.asarray(images), jnp.asarray(masks), jnp.float64)
  assert abs(loss - expected_loss) <= 1e-12 * abs(expected_loss)
  assert grads.keys() == expected.keys() and len(grads) == 128
  errors = {}
  for path, want in expected.items():
    assert grads[path].dtype == np.float64 and np.linalg.norm(want) > 0, path
    errors["/".join(path[1:])] = np.linalg.norm(grads[path] - want) / np.linalg.norm(want)
  worst = max(errors, key=errors.get)
  assert errors[worst] <= FLOAT64_TOLERANCE, f"{worst}: relative error {errors[worst]:.2e}"


@pytest.mark.parametrize("reference", [False, True], ids=["fast_ops", "reference_ops"])
def test_float32_gradient_matches_pytorch(case, reference):
  variables, images, masks, expected_loss, expected = case
  with ops.reference_ops(reference):
    loss, grads = _loss_and_grads(variables, jnp.asarray(images), jnp.asarray(masks), jnp.float32)
  assert abs(loss - expected_loss) <= 1e-5 * abs(expected_loss)
  error = sum(np.sum((grads[p] - w) ** 2) for p, w in expected.items())
  norm = sum(np.sum(w ** 2) for w in expected.values())
  assert np.sqrt(error / norm) <= FLOAT32_TOLERANCE
