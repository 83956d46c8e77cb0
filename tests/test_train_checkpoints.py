"""Training checkpoints: the train state, the meta data and the data
iterator's position come back exactly; bad paths are clear errors."""

import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aulunet_jax import checkpoints, train


def _state(seed):
  rng = np.random.default_rng(seed)
  params = {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2)), jnp.float32)},
            "bn": {"scale": jnp.ones(2), "bias": jnp.zeros(2)}}
  state = train.TrainState.create(apply_fn=None, params=params, batch_stats={"bn": {"mean": jnp.zeros(2),
                                                                                   "var": jnp.ones(2)}},
                                  tx=optax.adamw(1e-3))
  grads = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  return state.apply_gradients(grads=grads, batch_stats={"bn": {"mean": jnp.full(2, 0.5), "var": jnp.full(2, 2.0)}})


def _iterator():
  return iter(grain.MapDataset.range(50).shuffle(seed=3).batch(4).to_iter_dataset())


def _assert_equal_states(a, b):
  assert int(a.step) == int(b.step)
  for x, y in zip(jax.tree_util.tree_leaves((a.params, a.batch_stats, a.opt_state)),
                  jax.tree_util.tree_leaves((b.params, b.batch_stats, b.opt_state))):
    np.testing.assert_array_equal(x, y)


def test_latest_restores_state_meta_and_data_position(tmp_path):
  ckpts = checkpoints.TrainingCheckpoints(tmp_path)
  assert ckpts.restore_latest(_state(0), _iterator()) is None and ckpts.path("latest") is None
  spec = checkpoints.model_spec("aulunet_v3")
  data = _iterator()
  for _ in range(3):
    next(data)
  ckpts.save_latest(1, _state(1), spec, {"epoch": 1}, data)
  next(data)
  saved = _state(2)
  ckpts.save_latest(2, saved, spec, {"epoch": 2, "best": {"val_loss": 0.5, "epoch": 2}}, data)
  expected_next = [next(data) for _ in range(3)]
  assert sorted(os.listdir(tmp_path / "checkpoints" / "latest")) == ["2"]  # only the newest is kept
  ckpts.close()

  restored_data = _iterator()
  state, meta = checkpoints.TrainingCheckpoints(tmp_path).restore_latest(_state(7), restored_data)
  _assert_equal_states(state, saved)
  assert isinstance(state.params["conv"]["kernel"], np.ndarray)  # host arrays: any device count can take them
  assert meta == {"epoch": 2, "best": {"val_loss": 0.5, "epoch": 2}}
  for want in expected_next:
    np.testing.assert_array_equal(next(restored_data), want)


def test_best_keeps_the_newest(tmp_path):
  ckpts = checkpoints.TrainingCheckpoints(tmp_path)
  spec = checkpoints.model_spec("aulunet_v3")
  ckpts.save_best(2, _state(2), spec, {"epoch": 2})
  ckpts.save_best(5, _state(5), spec, {"epoch": 5})
  assert ckpts.best_epoch() == 5 and ckpts.path("best") == os.fspath(tmp_path / "checkpoints" / "best" / "5")
  state, meta = ckpts.restore_best(_state(0))
  _assert_equal_states(state, _state(5))
  assert meta == {"epoch": 5}


def test_unfinished_write_is_ignored_and_cleaned_up(tmp_path):
  ckpts = checkpoints.TrainingCheckpoints(tmp_path)
  spec = checkpoints.model_spec("aulunet_v3")
  ckpts.save_latest(1, _state(1), spec, {"epoch": 1}, _iterator())
  ckpts.close()
  # What a process killed while writing epoch 2 leaves behind: orbax's temporary directory.
  partial = tmp_path / "checkpoints" / "latest" / "2.orbax-checkpoint-tmp"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "garbage").write_bytes(b"\0" * 10)
  ckpts = checkpoints.TrainingCheckpoints(tmp_path)
  state, meta = ckpts.restore_latest(_state(0), _iterator())
  assert meta == {"epoch": 1}
  _assert_equal_states(state, _state(1))
  assert not partial.exists()


def test_resuming_with_another_process_count_is_a_clear_error(tmp_path):
  ckpts = checkpoints.TrainingCheckpoints(tmp_path)
  ckpts.save_latest(1, _state(1), checkpoints.model_spec("aulunet_v3"), {"epoch": 1}, _iterator())
  data = tmp_path / "checkpoints" / "latest" / "1" / "data"
  os.rename(data / "process_0-of-1.json", data / "process_0-of-2.json")  # as if written by 2 processes
  with pytest.raises(ValueError, match="resumes with the number of processes it was started with"):
    ckpts.restore_latest(_state(0), _iterator())


def test_load_inference_checkpoint_names_what_it_expected(tmp_path):
  with pytest.raises(FileNotFoundError, match="not an aulunet_jax checkpoint"):
    checkpoints.load_inference_checkpoint(tmp_path)
