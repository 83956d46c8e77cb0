import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aulunet_jax
from aulunet_jax import checkpoints, export, preprocessing

pytest.importorskip("tensorflow")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64


@pytest.fixture(scope="module")
def model_and_variables():
  model = aulunet_jax.AULUNet()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3)), train=False)
  # Non-trivial BatchNorm statistics, so that the export must carry them.
  variables = {**variables, "batch_stats": jax.tree_util.tree_map(
      lambda x: x + 0.1 * jax.random.uniform(jax.random.PRNGKey(1), x.shape), variables["batch_stats"])}
  return model, variables


def test_in_graph_normalisation_is_the_training_one():
  images = export.random_images(3, 32, "float32") * np.array([1, 0.5, 2], np.float32)[:, None, None, None]
  images[2] = 7.0  # a constant image
  np.testing.assert_allclose(np.asarray(export.normalize_images(jnp.asarray(images))),
                             preprocessing.normalize_image(images), atol=1e-4)


# Each format with one input type here; the command test exports TFLite with uint8 input.
@pytest.mark.parametrize("fmt, input_dtype", [("savedmodel", "uint8"), ("tflite", "float32")])
def test_export_matches_jax(model_and_variables, tmp_path, fmt, input_dtype):
  model, variables = model_and_variables
  path = str(tmp_path / ("model.tflite" if fmt == "tflite" else "saved_model"))
  # A SavedModel takes any batch size; a TFLite model its fixed one (1 by default).
  tflite_batch = 2 if input_dtype == "float32" else None
  export.export(model, variables, path, fmt, image_size=SIZE, input_dtype=input_dtype,
                batch_size=tflite_batch if fmt == "tflite" else None)
  runner = export.load_runner(path, fmt)
  assert runner.input_dtype == input_dtype
  batches = (1, 3) if fmt == "savedmodel" else (tflite_batch or 1,) * 2
  for seed, batch in enumerate(batches):
    images = export.random_images(batch, SIZE, input_dtype, seed=seed)
    out = runner(images)
    assert out.shape == (batch, SIZE, SIZE, 1) and out.dtype == np.float32
    assert export.max_abs_difference(model, variables, runner, images) <= 1e-5
  assert export.size_bytes(path) > 4 * aulunet_jax.count_params(variables)  # float32 weights are inside


def test_bad_export_settings_are_named(model_and_variables, tmp_path):
  model, variables = model_and_variables
  with pytest.raises(ValueError, match="multiple of 32"):
    export.export_tflite(model, variables, str(tmp_path / "m.tflite"), image_size=48)
  with pytest.raises(ValueError, match="input_dtype must be one of"):
    export.export_tflite(model, variables, str(tmp_path / "m.tflite"), image_size=SIZE, input_dtype="int16")
  with pytest.raises(ValueError, match="format must be one of"):
    export.export(model, variables, str(tmp_path / "m.onnx"), "onnx")
  with pytest.raises(ValueError, match="a SavedModel takes any batch size"):
    export.export(model, variables, str(tmp_path / "sm"), "savedmodel", batch_size=2)


def test_export_command_reports_size_difference_and_latency(model_and_variables, tmp_path):
  path = checkpoints.save_inference_checkpoint(str(tmp_path / "ckpt"), model_and_variables[1],
                                               checkpoints.model_spec("aulunet_v3"))
  out = str(tmp_path / "aulunet.tflite")
  cmd = [sys.executable, "-m", "launch.export", f"--checkpoint={path}", "--format=tflite", f"--output={out}",
         f"--image_size={SIZE}", "--report=json"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["size_bytes"] == os.path.getsize(out)
  assert report["max_abs_diff_vs_jax"] <= 1e-5
  assert 0 <= report["jax_roundoff"] <= 1e-5  # a freshly initialised model amplifies round-off little
  assert report["latency_ms_median"] > 0 and report["input_dtype"] == "uint8" and report["batch_size"] == 1
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert again.returncode != 0 and "--overwrite" in again.stderr
