"""The reference's learning-rate schedule: torch.optim.lr_scheduler.
CosineAnnealingLR, stepped once per epoch.

torch computes it recursively; its closed form, which the recursion equals
exactly in real arithmetic, is

  lr(e) = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2

for epoch e = 0, 1, 2, ... It is *not* clamped at T_max: past T_max the
rate rises again, reaching base_lr at e = 2 T_max, so it is periodic with
period 2 T_max. With the reference's T_max = 50 and 400 epochs, training
goes through four such cycles.
"""

import jax.numpy as jnp


def cosine_annealing_lr(epoch, base_lr: float, t_max: int = 50, eta_min: float = 1e-5):
  """torch's CosineAnnealingLR rate for epoch ``epoch`` (scalar or array)."""
  if t_max <= 0:
    raise ValueError(f"t_max must be a positive number of epochs, got {t_max}")
  # Reducing the epoch modulo the period first keeps the cosine's argument
  # in [0, 2 pi), where float32 loses the least.
  phase = jnp.remainder(epoch, 2 * t_max) / t_max
  return eta_min + (base_lr - eta_min) * (1.0 + jnp.cos(jnp.pi * phase)) / 2.0


def per_epoch_cosine_annealing(base_lr: float, steps_per_epoch: int, t_max: int = 50, eta_min: float = 1e-5):
  """An optax schedule (step -> rate) that holds each epoch's rate for all its steps.

  Step s belongs to epoch s // steps_per_epoch, as when torch's scheduler is
  stepped after each epoch.
  """
  if steps_per_epoch <= 0:
    raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")

  def schedule(step):
    return cosine_annealing_lr(step // steps_per_epoch, base_lr, t_max, eta_min)

  return schedule
