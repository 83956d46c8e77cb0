"""The training run end to end on small synthetic data (32x32): what it
leaves in the workdir, that it learns, and that a run killed at any moment
(kill -9, also in the middle of writing a checkpoint) resumes exactly."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import train_helpers
from aulunet_jax import checkpoints, input_pipeline, metrics, writers

DATASET = "isic/synthetic_32"
EPOCHS = 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = os.fspath(tmp_path_factory.mktemp("tfds"))
  input_pipeline.build_synthetic_if_missing(root, config={"name": "synthetic_32", "source": "synthetic",
                                                          "image_size": 32, "synthetic_examples": [96, 16, 16]})
  return root


def _command(data_dir, workdir, *extra):
  return ["-m", "launch.train", "--flagfile=demo.flags", f"--dataset={DATASET}", f"--data_dir={data_dir}",
          f"--workdir={workdir}", f"--epochs={EPOCHS}", f"--t_max={EPOCHS}", "--learning_rate=5e-3",
          "--val_interval=1", "--progress_bar=false", "--num_figures=3", *extra]


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """An uninterrupted run."""
  workdir = tmp_path_factory.mktemp("reference")
  proc = train_helpers.run(_command(data_dir, workdir))
  return workdir, proc


def _losses(workdir):
  return {(r["epoch"], r["split"]): (r["loss"], r.get("dsc")) for r in writers.read_metrics(workdir)}


def test_run_leaves_checkpoints_logs_figures_and_results(reference):
  workdir, proc = reference
  results = json.load(open(workdir / "results.json"))
  assert set(metrics.NAMES) <= results.keys() and all(0 <= results[k] <= 1 for k in metrics.NAMES)
  assert results["split"] == "test" and results["num_examples"] == 16
  best = json.load(open(os.path.join(results["checkpoint"], "meta", "metadata")))
  assert best["epoch"] == results["epoch"]
  assert results["checkpoint"] == os.fspath(workdir / "checkpoints" / "best" / str(results["epoch"]))
  assert os.listdir(workdir / "checkpoints" / "latest") == [str(EPOCHS)]
  assert os.path.getsize(workdir / "figures" / "test_qualitative.png") > 10_000
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir / "tensorboard"))
  for name in ("config.json", "environment.json", "flags.txt"):
    assert os.path.getsize(workdir / name) > 0
  assert json.load(open(workdir / "environment.json"))["packages"]["jax"]
  assert "--epochs=8" in open(workdir / "flags.txt").read()
  # One log line per epoch, then the summary table.
  assert proc.stderr.count("epoch ") >= EPOCHS and "| test (16 images) |" in proc.stderr
  # The best checkpoint has the lowest validation loss of the run.
  val = {e: loss for (e, split), (loss, _) in _losses(workdir).items() if split == "validation"}
  assert sorted(val) == list(range(1, EPOCHS + 1)) and min(val, key=val.get) == results["epoch"]


def test_validation_dice_rises_clearly(reference):
  dsc = [r["dsc"] for r in writers.read_metrics(reference[0]) if r["split"] == "validation"]
  assert max(dsc[-3:]) > dsc[0] + 0.2, dsc


def test_workdir_and_its_checkpoints_load_for_inference(reference):
  workdir, _ = reference
  results = json.load(open(workdir / "results.json"))
  model, variables = checkpoints.load_inference_checkpoint(workdir)
  assert model.axis_name is None  # built for inference, not for pmap
  expected = checkpoints.abstract_variables(model)
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(expected)
  assert [v.shape for v in jax.tree_util.tree_leaves(variables)] == [
      v.shape for v in jax.tree_util.tree_leaves(expected)]
  for path in (workdir / "checkpoints" / "best", results["checkpoint"]):
    _, again = checkpoints.load_inference_checkpoint(path)
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(again)):
      np.testing.assert_array_equal(a, b)



def _wait_for(predicate, proc, timeout=300):
  deadline = time.time() + timeout
  while not predicate():
    assert proc.poll() is None, f"the run ended early: {proc.stderr.read()[-3000:]}"
    assert time.time() < deadline, "timed out"
    time.sleep(0.05)


def test_run_killed_mid_epoch_resumes_exactly(data_dir, reference, tmp_path):
  command = _command(data_dir, tmp_path)
  proc = subprocess.Popen([sys.executable, *command], cwd=train_helpers.ROOT, env=train_helpers.env(1),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  metrics_file = tmp_path / "metrics.jsonl"
  _wait_for(lambda: metrics_file.exists() and '"epoch": 3, "split": "validation"' in metrics_file.read_text(), proc)
  time.sleep(0.4)  # into epoch 4
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (tmp_path / "results.json").exists()
  train_helpers.run(command)
  assert '"event": "resumed"' in metrics_file.read_text()
  assert _losses(tmp_path) == _losses(reference[0])
  assert json.load(open(tmp_path / "results.json"))["dsc"] == json.load(open(reference[0] / "results.json"))["dsc"]


# Runs launch.train with orbax's final rename of checkpoints/latest/3 replaced by kill -9: the process dies
# with every file of that checkpoint written but the checkpoint not yet in place.
_KILLED_WHILE_SAVING = """
import os, runpy, signal, sys
from orbax.checkpoint._src.path import atomicity
finalize = atomicity.AtomicRenameTemporaryPath.finalize
async def killing_finalize(self):
  if os.fspath(self.get_final()).endswith(os.path.join("latest", "3")):
    os.kill(os.getpid(), signal.SIGKILL)
  return await finalize(self)
atomicity.AtomicRenameTemporaryPath.finalize = killing_finalize
sys.argv = ["launch.train", *sys.argv[1:]]
runpy.run_module("launch.train", run_name="__main__")
"""


def test_kill_while_writing_a_checkpoint_leaves_readable_checkpoints(data_dir, reference, tmp_path):
  command = _command(data_dir, tmp_path)
  proc = train_helpers.run(["-c", _KILLED_WHILE_SAVING, *command[2:]], check=False)
  assert proc.returncode == -signal.SIGKILL
  latest = tmp_path / "checkpoints" / "latest"
  assert sorted(os.listdir(latest)) == ["2", "3.orbax-checkpoint-tmp"]
  train_helpers.run(command)  # resumes from epoch 2
  assert os.listdir(latest) == [str(EPOCHS)]
  assert _losses(tmp_path) == _losses(reference[0])


# Restores the latest checkpoint of a run made on 1 device onto 2 devices, as
# launch.train does when it resumes: prints what the restored state and data hold.
_RESTORE_ON_TWO_DEVICES = """
import json, sys
import jax, numpy as np
from flax import jax_utils
from aulunet_jax import checkpoints, input_pipeline, train
workdir, data_dir = sys.argv[1:]
config = train.TrainConfig(**json.load(open(f"{workdir}/config.json")))
template = jax.eval_shape(lambda: train.create_train_state(jax.random.PRNGKey(0), train.create_model(config),
                                                           (32, 32, 3), train.create_optimizer(config)))
template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), template)
data = input_pipeline.train_iterator(config.dataset, "train", data_dir, global_batch_size=config.global_batch_size,
                                     seed=config.seed)
state, meta = checkpoints.TrainingCheckpoints(workdir).restore_latest(template, data)
replicated = jax_utils.replicate(state)
kernel = replicated.params["head"]["kernel"]
print(json.dumps({"devices": jax.local_device_count(), "epoch": meta["epoch"], "step": int(state.step),
                  "kernel_shards_equal": all(np.array_equal(s.data[0], state.params["head"]["kernel"])
                                             for s in kernel.addressable_shards),
                  "kernel": np.asarray(state.params["head"]["kernel"]).ravel().tolist(),
                  "batch_shape": list(next(data)["image"].shape)}))
"""


def test_checkpoint_restores_on_another_device_count(data_dir, reference):
  workdir = reference[0]
  out = train_helpers.last_json(train_helpers.run(["-c", _RESTORE_ON_TWO_DEVICES, workdir, data_dir],
                                                  devices=2).stdout)
  saved_state = checkpoints.load_inference_checkpoint(workdir / "checkpoints" / "latest")[1]
  assert out["devices"] == 2 and out["epoch"] == EPOCHS and out["step"] == EPOCHS * 12  # 96 images / batch 8
  assert out["kernel_shards_equal"]
  np.testing.assert_array_equal(out["kernel"], np.asarray(saved_state["params"]["head"]["kernel"]).ravel())
  assert out["batch_shape"] == [2, 4, 32, 32, 3]  # the global batch of 8, now over 2 devices


def test_repeated_runs_write_mean_and_std_tables(data_dir, reference, tmp_path):
  train_helpers.run(_command(data_dir, tmp_path, "--runs=2", "--epochs=1", "--num_figures=0"))
  per_run = [json.load(open(tmp_path / f"seed_{s}" / "results.json")) for s in (0, 1)]
  assert per_run[0]["loss"] != per_run[1]["loss"]  # two different seeds
  rows = (tmp_path / "results.csv").read_text().splitlines()
  assert rows[0] == "run,seed," + ",".join(metrics.NAMES) and [r.split(",")[0] for r in rows[1:]] == [
      "seed_0", "seed_1", "mean", "std"]
  mean = dict(zip(metrics.NAMES, map(float, rows[3].split(",")[2:])))
  assert mean["accuracy"] == pytest.approx((per_run[0]["accuracy"] + per_run[1]["accuracy"]) / 2)
  assert "| mean ± std (2 runs) |" in (tmp_path / "results.md").read_text()


def test_non_finite_loss_stops_and_names_the_last_good_checkpoint(data_dir, tmp_path):
  # The rate jumps from 1e-3 in epoch 1 to eta_min = 1e12 in epoch 2 (T_max = 1).
  proc = train_helpers.run(_command(data_dir, tmp_path, "--epochs=3", "--t_max=1", "--eta_min=1e12"), check=False)
  assert proc.returncode == 1
  last_good = os.fspath(tmp_path / "checkpoints" / "latest" / "1")
  assert "the training loss became nan at epoch 2" in proc.stderr
  assert f"Last good checkpoint: {last_good}" in proc.stderr
  assert os.listdir(tmp_path / "checkpoints" / "latest") == ["1"] and not (tmp_path / "results.json").exists()
