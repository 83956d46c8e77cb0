import math

import numpy as np
import pytest

from aulunet_jax import schedules


def _closed_form(epoch, base_lr, t_max, eta_min):
  return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2


def test_cosine_annealing_is_the_closed_form_and_periodic():
  epochs = np.arange(400)
  lr = np.asarray(schedules.cosine_annealing_lr(epochs, 1e-3, t_max=50, eta_min=1e-5))
  expected = [_closed_form(e, 1e-3, 50, 1e-5) for e in epochs]
  np.testing.assert_allclose(lr, expected, rtol=1e-6, atol=1e-6 * 1e-3)  # float32 round-off of the rate
  assert lr[0] == pytest.approx(1e-3) and lr[50] == pytest.approx(1e-5) and lr[100] == pytest.approx(1e-3)
  assert lr[75] > lr[50] and lr[60] == pytest.approx(lr[40], rel=1e-6)  # rises again past T_max
  np.testing.assert_allclose(lr[100:200], lr[:100], rtol=1e-6)          # period 2 T_max


def test_matches_torch_scheduler_stepped_per_epoch():
  torch = pytest.importorskip("torch")
  param = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.AdamW([param], lr=1e-3)
  sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50, eta_min=1e-5)
  torch_lrs = []
  for _ in range(230):
    torch_lrs.append(opt.param_groups[0]["lr"])
    opt.step()
    sched.step()
  np.testing.assert_allclose(schedules.cosine_annealing_lr(np.arange(230), 1e-3, 50, 1e-5), torch_lrs, rtol=1e-6,
                             atol=1e-6 * 1e-3)


def test_rejects_a_bad_period():
  with pytest.raises(ValueError, match="t_max"):
    schedules.cosine_annealing_lr(0, 1e-3, t_max=0)
