"""The reference's learning-rate schedule: torch.optim.lr_scheduler.
CosineAnnealingLR, stepped once per epoch (the training loop sets epoch e's
rate before its first step, as torch's scheduler.step() after each epoch does).

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
