"""The reference's training loss: BCE + Dice on the sigmoid probabilities.

As the official code (BceDiceLoss of EGE-UNet / UltraLight-VM-UNet, which
AULUNet trains with) computes it, per batch of N images:

  BCE  = torch.nn.BCELoss on the flattened probabilities: the mean over all
         pixels of -(t log p + (1 - t) log(1 - p)), each log clamped at -100
         as PyTorch does, so that p = 0 or 1 gives a finite loss; its
         gradient is PyTorch's too, (p - t) / max(p (1 - p), 1e-12), finite
         where the sigmoid saturates to exactly 0 or 1 (which float32 reaches
         for logits above about 17; differentiating the clamped logs instead
         would give 0 * inf = NaN there);
  Dice = 1 - (1/N) sum_n (2 |p_n t_n| + 1) / (|p_n| + |t_n| + 1), smoothing 1;
  loss = bce_weight * BCE + dice_weight * Dice.

All images of a batch have the same size, so the batch BCE is the mean of the
per-image BCEs and the batch loss is the mean of per-image losses;
``per_example_bce_dice_loss`` exposes those, which lets evaluation average
over exactly the valid examples of a padded batch.
"""

import jax
import jax.numpy as jnp

# torch.nn.BCELoss clamps each log term at -100, and its backward clamps the
# denominator p (1 - p) at 1e-12.
_LOG_CLAMP = -100.0
_GRAD_EPSILON = 1e-12


@jax.custom_vjp
def _bce(probs, targets):
  """Element-wise BCE with PyTorch's clamped logs (forward) and gradient (backward)."""
  return -(targets * jnp.maximum(jnp.log(probs), _LOG_CLAMP)
           + (1.0 - targets) * jnp.maximum(jnp.log1p(-probs), _LOG_CLAMP))


def _bce_forward(probs, targets):
  return _bce(probs, targets), (probs, targets)


def _bce_backward(residuals, grad):
  probs, targets = residuals
  d_probs = grad * (probs - targets) / jnp.maximum(probs * (1.0 - probs), _GRAD_EPSILON)
  d_targets = grad * (jnp.maximum(jnp.log1p(-probs), _LOG_CLAMP) - jnp.maximum(jnp.log(probs), _LOG_CLAMP))
  return d_probs, d_targets


_bce.defvjp(_bce_forward, _bce_backward)


def _flat(probs, masks):
  """Both (N, ...) -> (N, pixels), in one dtype: float32 at least (float64 stays float64)."""
  dtype = jnp.result_type(probs, masks, jnp.float32)
  return (probs.reshape(probs.shape[0], -1).astype(dtype), masks.reshape(masks.shape[0], -1).astype(dtype))


def per_example_bce(probs, masks):
  """Mean BCE over the pixels of each example: (N, ...) -> (N,)."""
  probs, masks = _flat(probs, masks)
  return jnp.mean(_bce(probs, masks), axis=1)


def per_example_dice_loss(probs, masks, smooth: float = 1.0):
  """1 - soft Dice of each example, with additive smoothing: (N, ...) -> (N,)."""
  probs, masks = _flat(probs, masks)
  intersection = jnp.sum(probs * masks, axis=1)
  dice = (2.0 * intersection + smooth) / (jnp.sum(probs, axis=1) + jnp.sum(masks, axis=1) + smooth)
  return 1.0 - dice


def per_example_bce_dice_loss(probs, masks, bce_weight: float = 1.0, dice_weight: float = 1.0):
  """bce_weight * BCE + dice_weight * (1 - Dice) of each example: (N,)."""
  return bce_weight * per_example_bce(probs, masks) + dice_weight * per_example_dice_loss(probs, masks)


def bce_dice_loss(probs, masks, bce_weight: float = 1.0, dice_weight: float = 1.0):
  """The reference's BceDiceLoss of a batch (a scalar).

  Args:
    probs: predicted probabilities in [0, 1], (N, H, W, 1).
    masks: targets in [0, 1] (soft values allowed, as the reference keeps
      the bilinear-resized mask values), same shape.
  """
  return jnp.mean(per_example_bce_dice_loss(probs, masks, bce_weight, dice_weight))
