"""The grain input pipeline (aulunet_jax.input_pipeline) on a small prepared synthetic dataset."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import orbax.checkpoint as ocp
import grain
import pytest

from aulunet_jax import input_pipeline, preprocessing

CONFIG = {"name": "synthetic_32", "source": "synthetic", "image_size": 32, "synthetic_examples": [22, 5, 7]}
DATASET = "isic/synthetic_32"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("tfds"))
  assert input_pipeline.build_synthetic_if_missing(root, CONFIG) == DATASET  # builds with the tfds CLI
  return root


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _source_index(data_dir, split):
  """{normalised image bytes: image id} to recognise un-augmented training images."""
  source = input_pipeline.dataset_source(DATASET, split, data_dir)
  return {preprocessing.normalize_image(source[i]["image"]).tobytes(): source[i]["image_id"].decode()
          for i in range(len(source))}


def test_build_is_skipped_when_prepared_and_counts_are_right(data_dir):
  prepared = input_pipeline.dataset_dir(DATASET, data_dir)
  stamp = os.path.getmtime(prepared / "dataset_info.json")
  assert input_pipeline.build_synthetic_if_missing(data_dir, CONFIG) == DATASET
  assert os.path.getmtime(prepared / "dataset_info.json") == stamp
  assert [input_pipeline.num_examples(DATASET, s, data_dir) for s in ("train", "validation", "test")] == [22, 5, 7]
  assert input_pipeline.steps_per_epoch(DATASET, "train", data_dir, global_batch_size=4) == 5


def test_train_batches_are_pmap_shaped_and_normalised(data_dir):
  it = input_pipeline.train_iterator(DATASET, "train", data_dir, global_batch_size=4, seed=0, augment=False,
                                     local_device_count=2)
  batch = next(it)
  assert set(batch) == {"image", "mask"}
  assert batch["image"].shape == (2, 2, 32, 32, 3) and batch["image"].dtype == np.float32
  assert batch["mask"].shape == (2, 2, 32, 32, 1) and batch["mask"].dtype == np.float32
  images = batch["image"].reshape(4, -1)
  np.testing.assert_array_equal(images.min(1), 0.0)
  np.testing.assert_array_equal(images.max(1), 255.0)
  assert 0.0 <= batch["mask"].min() and batch["mask"].max() <= 1.0
  assert np.any((batch["mask"] > 0) & (batch["mask"] < 1)), "soft mask borders are kept"


def test_epochs_are_reshuffled_and_drop_the_incomplete_batch(data_dir):
  index = _source_index(data_dir, "train")
  it = input_pipeline.train_iterator(DATASET, "train", data_dir, global_batch_size=4, seed=1, augment=False)
  epochs = []
  for _ in range(3):
    batches = _take(it, 5)  # 22 // 4 whole batches per epoch
    epochs.append([index[image.tobytes()] for b in batches for image in b["image"].reshape(-1, 32, 32, 3)])
  for ids in epochs:
    assert len(set(ids)) == 20, "an epoch visits 20 distinct examples of the 22, none twice"
  assert epochs[0] != epochs[1] != epochs[2]


def test_same_seed_same_stream_other_seed_other_stream(data_dir):
  def first(seed):
    it = input_pipeline.train_iterator(DATASET, "train", data_dir, global_batch_size=4, seed=seed)
    return np.stack([b["image"] for b in _take(it, 6)])
  a, b, c = first(7), first(7), first(8)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_augmentation_changes_images_but_keeps_them_paired(data_dir):
  plain = np.stack([b["image"] for b in _take(input_pipeline.train_iterator(
      DATASET, "train", data_dir, global_batch_size=4, seed=3, augment=False), 5)]).reshape(-1, 32, 32, 3)
  augmented = _take(input_pipeline.train_iterator(DATASET, "train", data_dir, global_batch_size=4, seed=3), 5)
  images = np.stack([b["image"] for b in augmented]).reshape(-1, 32, 32, 3)
  masks = np.stack([b["mask"] for b in augmented]).reshape(-1, 32, 32, 1)
  assert not np.array_equal(plain, images)
  # Every augmented image is its plain twin moved by the same transform as its mask: the pixel multiset of an
  # image that was only reflected is unchanged.
  same_pixels = [np.array_equal(np.sort(p.ravel()), np.sort(i.ravel())) for p, i in zip(plain, images)]
  assert sum(same_pixels) >= 5
  assert set(np.unique(masks)) <= set(np.unique(np.stack([b["mask"] for b in _take(
      input_pipeline.train_iterator(DATASET, "train", data_dir, global_batch_size=4, seed=3, augment=False), 5)])))


def test_processes_and_devices_split_the_same_global_batches(data_dir):
  def stream(**layout):
    it = input_pipeline.train_iterator(DATASET, "train", data_dir, global_batch_size=8, seed=5, **layout)
    return [b["image"].reshape(-1, 32, 32, 3) for b in _take(it, 4)]
  whole = stream(process_index=0, process_count=1, local_device_count=1)
  halves = [stream(process_index=p, process_count=2, local_device_count=2) for p in range(2)]
  for step in range(4):
    np.testing.assert_array_equal(whole[step], np.concatenate([halves[0][step], halves[1][step]]))


def test_resume_from_saved_state(data_dir, tmp_path):
  kwargs = dict(global_batch_size=4, seed=11)
  it = input_pipeline.train_iterator(DATASET, "train", data_dir, **kwargs)
  _take(it, 7)  # into the second epoch
  state = json.loads(json.dumps(it.get_state()))
  with ocp.Checkpointer(grain.checkpoint.CheckpointHandler()) as checkpointer:
    checkpointer.save(tmp_path / "ds", args=grain.checkpoint.CheckpointSave(it))
  expected = _take(it, 6)
  for restore in ("state", "orbax"):
    fresh = input_pipeline.train_iterator(DATASET, "train", data_dir, **kwargs)
    if restore == "state":
      fresh.set_state(state)
    else:
      with ocp.Checkpointer(grain.checkpoint.CheckpointHandler()) as checkpointer:
        checkpointer.restore(tmp_path / "ds", args=grain.checkpoint.CheckpointRestore(fresh))
    for a, b in zip(expected, _take(fresh, 6)):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["mask"], b["mask"])


def test_worker_processes_give_the_same_batches(data_dir):
  kwargs = dict(global_batch_size=4, seed=2)
  expected = _take(input_pipeline.train_iterator(DATASET, "train", data_dir, **kwargs), 6)
  it = input_pipeline.train_iterator(DATASET, "train", data_dir, worker_count=2, **kwargs)
  try:
    for a, b in zip(expected, _take(it, 6)):
      np.testing.assert_array_equal(a["image"], b["image"])
  finally:
    it.close()


_PROCESS = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    port, process_id, data_dir, out = sys.argv[1:]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=int(process_id))
    from aulunet_jax import input_pipeline
    assert jax.process_count() == 2 and jax.local_device_count() == 2
    it = input_pipeline.train_iterator("isic/synthetic_32", "train", data_dir, global_batch_size=8, seed=5)
    train = np.stack([next(it)["image"] for _ in range(3)])
    ids = [b["image_id"] for b in input_pipeline.eval_iterator("isic/synthetic_32", "test", data_dir,
                                                                global_batch_size=4)]
    np.savez(out, train=train, ids=np.stack(ids))
    jax.distributed.shutdown()
""")


def test_real_jax_processes_read_their_shares(data_dir, tmp_path):
  # Two JAX processes on loopback, two CPU devices each: the defaults pick up process index and devices.
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-c", _PROCESS, str(port), str(i), data_dir, str(tmp_path / f"{i}.npz")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  for proc in procs:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
  shares = [np.load(tmp_path / f"{i}.npz") for i in range(2)]
  assert shares[0]["train"].shape == (3, 2, 2, 32, 32, 3)  # steps, local devices, per device
  whole = input_pipeline.train_iterator(DATASET, "train", data_dir, global_batch_size=8, seed=5, process_index=0,
                                        process_count=1, local_device_count=1)
  for step in range(3):
    expected = next(whole)["image"].reshape(8, 32, 32, 3)
    got = np.concatenate([share["train"][step].reshape(4, 32, 32, 3) for share in shares])
    np.testing.assert_array_equal(got, expected)
  ids = sorted(i for share in shares for i in share["ids"].ravel() if i)
  assert ids == sorted(_source_index(data_dir, "test").values())


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_visits_every_example_once_with_padding(data_dir, process_count):
  source_ids = {i for i in _source_index(data_dir, "test").values()}  # 7 examples
  shares = [list(input_pipeline.eval_iterator(DATASET, "test", data_dir, global_batch_size=4,
                                              process_index=p, process_count=process_count))
            for p in range(process_count)]
  assert len({len(share) for share in shares}) == 1, "every process runs the same number of steps"
  assert len(shares[0]) == 2
  ids, padding = [], 0
  for share in shares:
    for batch in share:
      assert batch["valid"].shape == batch["image_id"].shape == (1, 4 // process_count)
      assert batch["image"].shape == (1, 4 // process_count, 32, 32, 3)
      ids += list(batch["image_id"][batch["valid"]])
      padding += int((~batch["valid"]).sum())
      assert (batch["image_id"][~batch["valid"]] == "").all()
      np.testing.assert_array_equal(batch["mask"][~batch["valid"]], 0.0)
  assert sorted(ids) == sorted(source_ids) and padding == 1


def test_clear_errors(data_dir):
  with pytest.raises(input_pipeline.DatasetNotPreparedError, match="tfds build datasets/isic --config=2017"):
    input_pipeline.dataset_source("isic/2017", "train", data_dir)
  with pytest.raises(FileNotFoundError):  # DatasetNotPreparedError is one
    input_pipeline.num_examples("isic/synthetic_32:9.9.9", "train", data_dir)
  with pytest.raises(ValueError, match="no split 'official_train'"):
    input_pipeline.dataset_source(DATASET, "official_train", data_dir)
  with pytest.raises(ValueError, match="isic/<config>"):
    input_pipeline.dataset_source("mnist", "train", data_dir)
  with pytest.raises(ValueError, match="multiple of process_count"):
    input_pipeline.train_iterator(DATASET, "train", data_dir, global_batch_size=3, seed=0, local_device_count=2)
  with pytest.raises(ValueError, match="fewer than one global batch"):
    input_pipeline.train_iterator(DATASET, "train", data_dir, global_batch_size=32, seed=0)


_BLOCK_TENSORFLOW = textwrap.dedent("""
    # TensorFlow hidden as if not installed: the path finder no longer finds it (find_spec returns None).
    import importlib.machinery, sys

    class PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
      @classmethod
      def find_spec(cls, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
          return None
        return super().find_spec(name, path, target)

    sys.meta_path[:] = [PathFinderWithoutTensorFlow if finder is importlib.machinery.PathFinder else finder
                        for finder in sys.meta_path]
""")


def test_reading_and_training_batches_need_no_tensorflow(data_dir):
  script = _BLOCK_TENSORFLOW + textwrap.dedent(f"""
      import tensorflow_datasets as tfds
      from aulunet_jax import input_pipeline
      it = input_pipeline.train_iterator({DATASET!r}, "train", {data_dir!r}, global_batch_size=4, seed=0)
      batch = next(it)
      assert batch["image"].shape == (1, 4, 32, 32, 3), batch["image"].shape
      n = sum(int(b["valid"].sum()) for b in input_pipeline.eval_iterator(
          {DATASET!r}, "validation", {data_dir!r}, global_batch_size=4))
      assert n == 5, n
      assert len(tfds.data_source({DATASET!r}, split="test", data_dir={data_dir!r})) == 7
      try:
        import tensorflow
      except ImportError:
        pass
      else:
        raise AssertionError("the import block does not work")
      assert not any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules)
      print("NO_TF_OK")
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "NO_TF_OK" in result.stdout
