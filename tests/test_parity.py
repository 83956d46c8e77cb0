"""Official-checkpoint conversion and numerical parity with PyTorch.

The PyTorch model (aulunet_jax/torch_reference.py) carries the official module
names, so its state_dict has the official keys and shapes.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import aulunet_jax  # noqa: E402
from aulunet_jax import convert  # noqa: E402
from aulunet_jax.torch_reference import TorchAULUNet, randomize  # noqa: E402


@pytest.fixture(scope="module")
def reference():
  torch.set_num_threads(2)
  model = randomize(TorchAULUNet(), seed=0)
  images = np.random.RandomState(0).uniform(0, 255, (2, 256, 256, 3)).astype(np.float32)
  return model, images


def _nchw(x, dtype=torch.float32):
  return torch.from_numpy(x).to(dtype).permute(0, 3, 1, 2)


def _nhwc(t):
  return t.detach().permute(0, 2, 3, 1).double().numpy()


def test_state_dict_keys_are_the_official_ones(reference):
  model, _ = reference
  keys = set(model.state_dict())
  for key in ["enc0_conv.0.weight", "enc0_conv.1.running_mean", "enc0_akfb.dw_local.weight",
              "enc1_akfb.dw_dilated.weight", "enc1_akfb.gate_conv.bias", "enc1_akfb.fuse_conv.conv.weight",
              "enc1_proj.bn.running_var", "bottleneck_rgfb.conv.weight", "up4.proj.conv.weight",
              "skip3.conv.weight", "skip3.bn.weight", "dec0_akfb.fuse_conv.bn.bias", "head.0.weight",
              "head.0.bias"]:
    assert key in keys
  mapped = {k for _, k, _ in convert.key_map()}
  assert mapped == {k for k in keys if not k.endswith("num_batches_tracked")}


def test_eval_mode_matches_pytorch(reference):
  model, images = reference
  variables = convert.from_torch_state_dict(model.state_dict())
  assert aulunet_jax.count_params(variables) == sum(p.numel() for p in model.parameters()) == 28636
  with torch.no_grad():
    expected = _nhwc(copy.deepcopy(model).eval()(_nchw(images)))
  got = np.asarray(aulunet_jax.AULUNet().apply(variables, jnp.asarray(images), train=False))
  assert got.shape == (2, 256, 256, 1)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_train_mode_and_running_stats_match_pytorch(reference):
  """Batch statistics and the updated running mean/var (PyTorch updates the
  running variance with the unbiased batch variance).

  Compared with PyTorch in float64, i.e. with the reference arithmetic
  without round-off: on these inputs PyTorch's own float32 train-mode output
  differs from its float64 output by about 4e-5 (its float32 path is the
  less accurate one here), while ours stays within 1e-5.
  """
  model, images = reference
  variables = convert.from_torch_state_dict(model.state_dict())
  t64 = copy.deepcopy(model).double().train()
  expected = _nhwc(t64(_nchw(images, torch.float64)))
  got, updated = aulunet_jax.AULUNet().apply(variables, jnp.asarray(images), train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-5)

  want = convert.from_torch_state_dict(t64.state_dict())["batch_stats"]
  for path, a in jax.tree_util.tree_leaves_with_path(updated["batch_stats"]):
    b = dict(jax.tree_util.tree_leaves_with_path(want))[path]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  # The statistics did move: the test would notice a missing update.
  before = convert.from_torch_state_dict(model.state_dict())["batch_stats"]
  moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), updated["batch_stats"], before)
  assert min(jax.tree_util.tree_leaves(moved)) > 1e-4


def test_round_trip_to_torch_keys(reference):
  model, images = reference
  variables = convert.from_torch_state_dict(model.state_dict())
  back = convert.to_torch_state_dict(variables)
  fresh = TorchAULUNet()
  missing, unexpected = fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=False)
  assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
  for k, v in model.state_dict().items():
    if not k.endswith("num_batches_tracked"):
      np.testing.assert_array_equal(fresh.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_accepts_latest_pth_wrapper_and_dataparallel_prefix(reference):
  model, _ = reference
  sd = model.state_dict()
  wrapped = {"epoch": 3, "model_state_dict": {"module." + k: v for k, v in sd.items()}}
  a = convert.from_torch_state_dict(wrapped)
  b = convert.from_torch_state_dict({k: v.numpy() for k, v in sd.items()})
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_bad_state_dicts_name_the_key(reference):
  model, _ = reference
  sd = dict(model.state_dict())
  missing = {k: v for k, v in sd.items() if k != "skip3.bn.weight"}
  with pytest.raises(ValueError, match=r"missing key 'skip3\.bn\.weight'"):
    convert.from_torch_state_dict(missing)
  extra = dict(sd, **{"enc9_akfb.dw_local.weight": torch.zeros(5, 1, 3, 3)})
  with pytest.raises(ValueError, match=r"unexpected key 'enc9_akfb\.dw_local\.weight'"):
    convert.from_torch_state_dict(extra)
  wrong = dict(sd, **{"up4.proj.conv.weight": torch.zeros(25, 36, 1, 1)})
  with pytest.raises(ValueError, match=r"shape mismatch for 'up4\.proj\.conv\.weight'"):
    convert.from_torch_state_dict(wrong)


def test_convert_command_writes_a_loadable_orbax_checkpoint(reference, tmp_path):
  import subprocess
  import sys

  from aulunet_jax import checkpoints

  model, images = reference
  pth = tmp_path / "latest.pth"
  torch.save({"epoch": 1, "model_state_dict": model.state_dict()}, pth)
  out = tmp_path / "converted"
  proc = subprocess.run([sys.executable, "-m", "launch.convert", f"--torch_checkpoint={pth}", f"--output={out}"],
                        capture_output=True, text=True, cwd=_repo_root())
  assert proc.returncode == 0, proc.stderr
  assert "28,636 parameters" in proc.stdout
  flax_model, variables = checkpoints.load_inference_checkpoint(out)
  with torch.no_grad():
    expected = _nhwc(copy.deepcopy(model).eval()(_nchw(images[:1])))
  got = np.asarray(flax_model.apply(variables, jnp.asarray(images[:1]), train=False))
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
  again = subprocess.run([sys.executable, "-m", "launch.convert", f"--torch_checkpoint={pth}", f"--output={out}"],
                         capture_output=True, text=True, cwd=_repo_root())
  assert again.returncode != 0 and "exists" in again.stderr


def _repo_root():
  import os
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
