import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aulunet_jax
from aulunet_jax.models import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _init(model, size=64):
  return model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), train=False)


def test_paper_model_has_28636_parameters():
  assert aulunet_jax.count_params(_init(aulunet_jax.AULUNet())) == 28636


@pytest.mark.parametrize("name", registry.list_models())
def test_every_registered_model_runs(name):
  model = aulunet_jax.build_model(name)
  size = 64 if name != "unet" else 32
  variables = _init(model, size)
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, size, size, 3)) * 255
  probs = model.apply(variables, x, train=False)
  assert probs.shape == (2, size, size, 1)
  assert float(probs.min()) >= 0 and float(probs.max()) <= 1
  probs_train, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert probs_train.shape == probs.shape
  assert jax.tree_util.tree_structure(updates["batch_stats"]) == jax.tree_util.tree_structure(
      variables["batch_stats"])


def test_ablations_remove_exactly_their_blocks():
  full = aulunet_jax.count_params(_init(aulunet_jax.AULUNet()))
  # RGF(60): one 60x60 1x1 conv.
  assert full - aulunet_jax.count_params(_init(aulunet_jax.AULUNet(use_rgf=False))) == 60 * 60
  # LSG(c): a 2c->c 1x1 conv and a BatchNorm, at each of the five decoder levels.
  lsg = sum(2 * c * c + 2 * c for c in aulunet_jax.models.PAPER_WIDTHS[:5])
  assert full - aulunet_jax.count_params(_init(aulunet_jax.AULUNet(use_lsg=False))) == lsg
  # AKF -> plain: loses the dilated depthwise conv and the gate (c*c + c) in its 11 blocks.
  widths = aulunet_jax.models.PAPER_WIDTHS
  akf_channels = [widths[0]] + list(widths[:5]) + list(widths[:5])
  akf = sum(9 * c + c * c + c for c in akf_channels)
  assert full - aulunet_jax.count_params(_init(aulunet_jax.AULUNet(use_akf=False))) == akf
  assert aulunet_jax.count_params(_init(aulunet_jax.AULUNet(akf_dilations=(1, 3)))) == full


def test_num_classes_and_widths_are_configurable():
  model = aulunet_jax.AULUNet(num_classes=3, widths=(4, 8, 8, 16, 16, 32))
  out = model.apply(_init(model), jnp.zeros((1, 64, 64, 3)))
  assert out.shape == (1, 64, 64, 3)


def test_bad_inputs_are_clear_errors():
  model = aulunet_jax.AULUNet()
  with pytest.raises(ValueError, match="divisible by 32"):
    _init(model, 48)
  with pytest.raises(ValueError, match="unknown model 'aulunet_v9'"):
    aulunet_jax.build_model("aulunet_v9")
  with pytest.raises(ValueError, match="gate must be one of"):
    _init(aulunet_jax.AULUNet(akf_gate="mixed"))
  with pytest.raises(ValueError, match="does not take"):
    aulunet_jax.build_model("aulunet_v3", depth=3)


def test_bfloat16_compute_keeps_float32_params_and_stats():
  model = aulunet_jax.AULUNet(dtype=jnp.bfloat16)
  variables = _init(model)
  assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(variables))
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 64, 64, 3)) * 255
  out, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
  ref = aulunet_jax.AULUNet().apply(variables, x, train=True, mutable=["batch_stats"])[0]
  assert out.dtype == jnp.float32
  assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(upd))
  # bfloat16 keeps ~3 significant digits: close on average, not bit-equal.
  assert float(jnp.abs(out - ref).mean()) < 0.02


def test_flops_command_reports_paper_scale_figures():
  proc = subprocess.run([sys.executable, "-m", "launch.flops", "--model=all", "--format=json"], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  rows = {r["model"]: r for r in map(json.loads, proc.stdout.strip().splitlines())}
  assert set(rows) == set(registry.list_models())
  assert set(rows["aulunet_v3"]) == {"model", "params", "xla_gflops", "gmacs", "bytes_accessed"}
  assert rows["aulunet_v3"]["params"] == 28636
  assert 0.060 <= rows["aulunet_v3"]["gmacs"] <= 0.080  # paper: 0.069
  assert abs(rows["unet"]["params"] - 7.773e6) / 7.773e6 < 0.005  # paper: 7.773 M
  assert 13.0 <= rows["unet"]["gmacs"] <= 14.5  # paper: 13.758
  assert rows["aulunet_base"]["gmacs"] < rows["aulunet_v3"]["gmacs"]


def test_skipped_window_count_matches_a_hand_count():
  from aulunet_jax.flops import skipped_window_macs
  # 3x3 conv, padding 1, on 4x4: per axis the valid taps are 2+3+3+2 = 10 of 12.
  f = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
  text = jax.jit(f).lower(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 5))).as_text()
  assert skipped_window_macs(text) == 5 * 2 * (12 * 12 - 10 * 10)
