import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aulunet_jax import losses


def test_bce_dice_matches_a_hand_computed_value():
  # Two 1x2 images. Image 0: p = (0.8, 0.4), t = (1, 0); image 1: p = (0.5, 0.9), t = (0.5, 1).
  probs = jnp.array([[0.8, 0.4], [0.5, 0.9]]).reshape(2, 1, 2, 1)
  masks = jnp.array([[1.0, 0.0], [0.5, 1.0]]).reshape(2, 1, 2, 1)
  bce = -(math.log(0.8) + math.log(0.6) + 0.5 * math.log(0.5) + 0.5 * math.log(0.5) + math.log(0.9)) / 4
  dice0 = (2 * 0.8 + 1) / (1.2 + 1 + 1)
  dice1 = (2 * (0.25 + 0.9) + 1) / (1.4 + 1.5 + 1)
  expected = bce + (1 - (dice0 + dice1) / 2)
  np.testing.assert_allclose(losses.bce_dice_loss(probs, masks), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.bce_dice_loss(probs, masks, bce_weight=2.0, dice_weight=0.5),
                             2 * bce + 0.5 * (1 - (dice0 + dice1) / 2), rtol=1e-6)


def test_saturated_probabilities_give_torch_clamped_log_and_gradient():
  torch = pytest.importorskip("torch")
  # p exactly 0 or 1, as a float32 sigmoid gives for large logits, right and wrong.
  probs = np.array([0.0, 1.0, 1.0, 0.0, 0.3], np.float32).reshape(1, 1, 5, 1)
  masks = np.array([1.0, 0.0, 1.0, 0.0, 1.0], np.float32).reshape(1, 1, 5, 1)
  # torch.nn.BCELoss clamps log at -100: p = 0 on a positive pixel costs 100, not inf.
  np.testing.assert_allclose(losses.per_example_bce(probs, masks), [(100 + 100 - np.log(0.3)) / 5], rtol=1e-6)
  tp = torch.tensor(probs, requires_grad=True)
  torch.nn.BCELoss()(tp, torch.tensor(masks)).backward()
  grad = np.asarray(jax.grad(lambda p: jnp.mean(losses.per_example_bce(p, masks)))(jnp.asarray(probs)))
  assert np.isfinite(grad).all()
  np.testing.assert_allclose(grad, tp.grad.numpy(), rtol=1e-6)


def _torch_reference_bce_dice(pred, target):
  """The official BceDiceLoss (BCELoss on flattened probs + DiceLoss with smooth 1)."""
  import torch
  n = pred.size(0)
  p, t = pred.view(n, -1), target.view(n, -1)
  bce = torch.nn.BCELoss()(p, t)
  dice = (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
  return bce + (1 - dice.sum() / n)


def test_matches_the_reference_loss_and_its_gradient():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  probs = rng.uniform(0.01, 0.99, (3, 8, 8, 1)).astype(np.float32)
  masks = (rng.uniform(size=(3, 8, 8, 1)) > 0.6).astype(np.float32)
  masks[0] = 0.0  # an image without lesion
  tp = torch.tensor(probs, requires_grad=True)
  ref = _torch_reference_bce_dice(tp, torch.tensor(masks))
  ref.backward()
  value, grad = jax.value_and_grad(losses.bce_dice_loss)(jnp.asarray(probs), jnp.asarray(masks))
  np.testing.assert_allclose(value, ref.item(), rtol=1e-6)
  np.testing.assert_allclose(grad, tp.grad.numpy(), rtol=1e-5, atol=1e-9)


def test_batch_loss_is_the_mean_of_per_example_losses():
  rng = np.random.default_rng(1)
  probs = jnp.asarray(rng.uniform(size=(4, 4, 4, 1)), jnp.float32)
  masks = jnp.asarray(rng.uniform(size=(4, 4, 4, 1)) > 0.5, jnp.float32)
  per_example = losses.per_example_bce_dice_loss(probs, masks)
  assert per_example.shape == (4,)
  np.testing.assert_allclose(losses.bce_dice_loss(probs, masks), per_example.mean(), rtol=1e-6)
  np.testing.assert_allclose(per_example[1], losses.bce_dice_loss(probs[1:2], masks[1:2]), rtol=1e-6)
