"""The pmapped training step: N devices and N processes compute what one
device computes on the same global batch."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import jax_utils

import train_helpers
from aulunet_jax import losses, metrics, train

WORKER = "tests/train_step_worker.py"


@pytest.fixture(scope="module")
def one_device():
  return train_helpers.last_json(train_helpers.run([WORKER], devices=1).stdout)


def _assert_same_training(a, b, exact=False):
  """Same losses, and for every parameter and BatchNorm statistic the same
  change over the steps (in float64; the logits and the running statistics
  are rounded to float32, hence 1e-5 rather than 1e-12)."""
  assert a["updates"].keys() == b["updates"].keys()
  if exact:
    assert a["losses"] == b["losses"] and a["updates"] == b["updates"]
    return
  np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-7)
  for name in b["updates"]:
    ua, ub = np.asarray(a["updates"][name]), np.asarray(b["updates"][name])
    assert np.linalg.norm(ub) > 0, f"{name} did not change"
    assert np.linalg.norm(ua - ub) <= 1e-5 * np.linalg.norm(ub), name


def test_two_devices_equal_one_device(one_device):
  two = train_helpers.last_json(train_helpers.run([WORKER], devices=2).stdout)
  assert (one_device["devices"], two["devices"]) == (1, 2)
  assert two["replicas_equal"]
  _assert_same_training(one_device, two)


def test_two_processes_on_loopback_stay_in_sync_and_equal_one_process(one_device, tmp_path):
  port = train_helpers.free_port()
  # Output to files, not pipes: a process blocked on a full pipe would stall the other at JAX's shutdown barrier.
  logs = [(open(tmp_path / f"out{i}", "w+"), open(tmp_path / f"err{i}", "w+")) for i in range(2)]
  procs = [subprocess.Popen([sys.executable, WORKER, "--num_processes=2", f"--process_id={i}",
                             f"--coordinator=127.0.0.1:{port}"], cwd=train_helpers.ROOT, env=train_helpers.env(1),
                            stdout=out, stderr=err, text=True) for i, (out, err) in enumerate(logs)]
  outs = []
  for p, (out, err) in zip(procs, logs):
    p.wait(timeout=600)
    out.seek(0)
    err.seek(0)
    assert p.returncode == 0, err.read()[-5000:]
    outs.append(train_helpers.last_json(out.read()))
  assert [o["process"] for o in outs] == [0, 1] and all(o["devices"] == 2 for o in outs)
  _assert_same_training(outs[0], outs[1], exact=True)
  _assert_same_training(one_device, outs[0])


def test_global_batch_that_does_not_divide_over_devices_is_a_clear_error():
  proc = train_helpers.run([WORKER, "--global_batch=3"], devices=2, check=False)
  assert proc.returncode != 0
  assert "global batch size 3 does not divide evenly over the 2 devices" in proc.stderr


def test_evaluate_counts_only_valid_examples_of_a_padded_batch():
  config = train.TrainConfig(model="aulunet_base")
  model = train.create_model(config)
  state = train.create_train_state(jax.random.PRNGKey(0), model, (32, 32, 3), train.create_optimizer(config))
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
  masks = (rng.uniform(size=(5, 32, 32, 1)) > 0.7).astype(np.float32)
  # Two batches of 3 (one device): the second holds 2 real examples and 1 padding example of garbage.
  pad_image = np.full((1, 32, 32, 3), 1e4, np.float32)
  batches = [{"image": images[:3][None], "mask": masks[:3][None], "valid": np.ones((1, 3), bool)},
             {"image": np.concatenate([images[3:], pad_image])[None],
              "mask": np.concatenate([masks[3:], np.ones((1, 32, 32, 1), np.float32)])[None],
              "valid": np.array([[True, True, False]])}]
  p_eval = jax.pmap(train.eval_step, axis_name="batch")
  scores, kept = train.evaluate(p_eval, jax_utils.replicate(state), batches, keep=4)
  probs = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images, train=False)
  assert scores["num_examples"] == 5
  np.testing.assert_allclose(scores["loss"], losses.bce_dice_loss(probs, masks), rtol=1e-5)
  expected = metrics.summarize(np.sum(np.asarray(metrics.per_image_confusion(probs, masks), np.float64), axis=0))
  for name in metrics.NAMES:
    assert scores[name] == pytest.approx(expected[name], rel=1e-9)
  np.testing.assert_allclose(kept["probs"], probs[:4], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(kept["image"], images[:4])


def test_bfloat16_compute_keeps_float32_parameters_statistics_and_loss_and_rate_is_an_argument():
  config = train.TrainConfig(model="aulunet_base", compute_dtype="bfloat16")
  model = train.create_model(config)
  state = train.create_train_state(jax.random.PRNGKey(0), model, (32, 32, 3), train.create_optimizer(config))
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(0, 255, (1, 2, 32, 32, 3)).astype(np.float32),
           "mask": (rng.uniform(size=(1, 2, 32, 32, 1)) > 0.5).astype(np.float32)}
  p_step = jax.pmap(train.train_step, axis_name="batch", in_axes=(0, 0, None))
  new_state, step_metrics = p_step(jax_utils.replicate(state), batch, np.float32(1e-3))
  assert step_metrics["loss"].dtype == jnp.float32 and np.isfinite(np.asarray(step_metrics["loss"])).all()
  for leaf in jax.tree_util.tree_leaves((new_state.params, new_state.batch_stats)):
    assert leaf.dtype == jnp.float32
  assert not np.array_equal(new_state.params["head"]["kernel"][0], state.params["head"]["kernel"])
  # The rate is the step's argument: at 0, AdamW (decay included) leaves the parameters as they were.
  frozen, _ = p_step(jax_utils.replicate(state), batch, np.float32(0.0))
  np.testing.assert_array_equal(frozen.params["head"]["kernel"][0], state.params["head"]["kernel"])
  with pytest.raises(ValueError, match="compute_dtype"):
    train.create_model(train.TrainConfig(compute_dtype="float16"))
