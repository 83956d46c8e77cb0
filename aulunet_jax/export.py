"""Export for deployment: TensorFlow SavedModel and TFLite, through jax2tf.

The exported model takes a batch of RGB images already resized to the
model's size, (N, S, S, 3), as uint8 (the default) or float32 (any range),
and returns lesion probabilities (N, S, S, 1) float32. The per-image min-max
normalisation of training (``preprocessing.normalize_image``) is part of the
exported graph, so a phone app only resizes (bilinear) and feeds the pixels;
thresholding at 0.5 (and resizing back) is left to the caller. The
SavedModel takes any batch size; a TFLite model has a fixed one (1 by
default, the phone case).

The model is traced with the plain reference ops (``ops.reference_ops``):
the fast formulations are tuned for XLA on CPU and may specialise on static
shapes, while an export must lower to TFLite ops and, as a SavedModel, hold
for any batch size. jax2tf serialises it as StableHLO inside the SavedModel
(for CPU, CUDA and TPU); the TFLite converter lowers that to TFLite built-in
ops. Two limits of the converter (TensorFlow 2.21) shape this: it cannot
lower a dense layer applied to a 4-D (N, 1, 1, C) tensor ('tfl.batch_matmul'
op found invalid output rank), which is why the models compute their
global-context gates (AKF, RGF) on (N, C) and broadcast back; and it cannot
lower the gathers of the reference upsampling under a symbolic batch size
('vhlo.dynamic_gather_v1' op is not part of the vhlo support yet), which is
why the TFLite batch size is fixed.

TensorFlow is imported only when exporting (it comes with the ``data``
extra); the rest of the library never needs it.
"""

import os
import time
import warnings
from typing import Callable, Dict, Optional

import jax.numpy as jnp
import numpy as np

from aulunet_jax import ops

INPUT_DTYPES = ("uint8", "float32")
FORMATS = ("savedmodel", "tflite")
SAVED_MODEL_PLATFORMS = ("cpu", "cuda", "tpu")


def _tensorflow():
  try:
    import tensorflow as tf
    from jax.experimental import jax2tf
  except ImportError:
    raise ImportError("exporting needs TensorFlow: pip install -e '.[data]' (tensorflow-cpu)") from None
  return tf, jax2tf


def normalize_images(images: jnp.ndarray) -> jnp.ndarray:
  """``preprocessing.normalize_image`` in jnp, per image of a batch: min-max
  over all pixels and channels to float32 [0, 255]; a constant image gives zeros."""
  x = images.astype(jnp.float32)
  lo = x.min(axis=(1, 2, 3), keepdims=True)
  span = x.max(axis=(1, 2, 3), keepdims=True) - lo
  return jnp.where(span > 0, (x - lo) * (255.0 / jnp.where(span > 0, span, 1.0)), 0.0)


def serving_function(model, variables) -> Callable:
  """images (N, S, S, 3) uint8 or float -> probabilities (N, S, S, 1) float32,
  traced with the plain reference ops."""
  def serve(images):
    with ops.reference_ops():
      return model.apply(variables, normalize_images(images), train=False).astype(jnp.float32)
  return serve


def _check(image_size: int, input_dtype: str):
  if image_size % 32:
    raise ValueError(f"image_size must be a multiple of 32, got {image_size}")
  if input_dtype not in INPUT_DTYPES:
    raise ValueError(f"input_dtype must be one of {INPUT_DTYPES}, got {input_dtype!r}")


def _tf_module(model, variables, image_size: int, input_dtype: str, platforms, batch_size: Optional[int] = None):
  """A tf.Module whose ``serve`` takes (B, S, S, 3) images and returns
  {'probabilities': (B, S, S, 1)}; B = ``batch_size``, or any when None."""
  _check(image_size, input_dtype)
  if batch_size is not None and batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  tf, jax2tf = _tensorflow()
  batch = "b" if batch_size is None else str(batch_size)
  converted = jax2tf.convert(serving_function(model, variables), with_gradient=False,
                             polymorphic_shapes=[f"({batch}, {image_size}, {image_size}, 3)"],
                             native_serialization_platforms=platforms)
  module = tf.Module()
  module.serve = tf.function(lambda images: {"probabilities": converted(images)}, autograph=False,
                             input_signature=[tf.TensorSpec([batch_size, image_size, image_size, 3], input_dtype,
                                                            name="images")])
  return module


def export_saved_model(model, variables, path: str, *, image_size: int = 256, input_dtype: str = "uint8") -> str:
  """Writes a SavedModel (signature 'serving_default': images -> probabilities) to ``path``."""
  tf, _ = _tensorflow()
  module = _tf_module(model, variables, image_size, input_dtype, SAVED_MODEL_PLATFORMS)
  tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
  return path


def export_tflite(model, variables, path: str, *, image_size: int = 256, input_dtype: str = "uint8",
                  batch_size: int = 1) -> str:
  """Writes a TFLite flatbuffer (float32 weights, built-in ops only, batch
  ``batch_size``) to ``path``."""
  tf, _ = _tensorflow()
  module = _tf_module(model, variables, image_size, input_dtype, ("cpu",), batch_size)
  converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  content = converter.convert()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(content)
  return path


def export(model, variables, path: str, fmt: str, *, batch_size: Optional[int] = None, **kwargs) -> str:
  """``export_saved_model`` or ``export_tflite``; ``batch_size`` is TFLite's
  fixed batch (default 1); a SavedModel takes any."""
  if fmt not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
  if fmt == "savedmodel":
    if batch_size is not None:
      raise ValueError("a SavedModel takes any batch size; batch_size is for TFLite")
    return export_saved_model(model, variables, path, **kwargs)
  return export_tflite(model, variables, path, batch_size=batch_size or 1, **kwargs)


def size_bytes(path: str) -> int:
  """Size of a file, or of all files under a directory (a SavedModel)."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


class SavedModelRunner:
  """Runs an exported SavedModel on numpy batches."""

  batch_size = None  # any

  def __init__(self, path: str):
    tf, _ = _tensorflow()
    self._tf = tf
    self._serve = tf.saved_model.load(path).signatures["serving_default"]
    self.input_dtype = self._serve.structured_input_signature[1]["images"].dtype.name

  def __call__(self, images: np.ndarray) -> np.ndarray:
    return self._serve(images=self._tf.constant(images))["probabilities"].numpy()


class TFLiteRunner:
  """Runs an exported TFLite model on numpy batches, with LiteRT's
  interpreter when ai-edge-litert is installed, else TensorFlow's."""

  def __init__(self, path: str):
    try:
      from ai_edge_litert.interpreter import Interpreter
    except ImportError:
      tf, _ = _tensorflow()
      Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
      # TensorFlow's interpreter announces its move to ai-edge-litert; it works in TF 2.21.
      warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
      self._interpreter = Interpreter(model_path=path)
    self._input = self._interpreter.get_input_details()[0]
    self._output = self._interpreter.get_output_details()[0]
    self.input_dtype = np.dtype(self._input["dtype"]).name
    self.batch_size = int(self._input["shape"][0])
    self._interpreter.allocate_tensors()

  def __call__(self, images: np.ndarray) -> np.ndarray:
    if images.shape[0] != self.batch_size:
      raise ValueError(f"this TFLite model takes batches of {self.batch_size} images, got {images.shape[0]}")
    self._interpreter.set_tensor(self._input["index"], images)
    self._interpreter.invoke()
    return self._interpreter.get_tensor(self._output["index"]).copy()


def load_runner(path: str, fmt: str):
  if fmt not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
  return SavedModelRunner(path) if fmt == "savedmodel" else TFLiteRunner(path)


def random_images(n: int, image_size: int, input_dtype: str, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  images = rng.uniform(0, 255, (n, image_size, image_size, 3))
  return images.astype(np.uint8) if input_dtype == "uint8" else images.astype(np.float32)


def max_abs_difference(model, variables, runner, images: np.ndarray) -> float:
  """Largest |exported - JAX| over ``images``, JAX fed the numpy preprocessing
  of training (so the in-graph normalisation is checked too)."""
  from aulunet_jax import preprocessing
  expected = np.asarray(model.apply(variables, preprocessing.normalize_image(images), train=False))
  return float(np.abs(runner(images) - expected).max())


def jax_roundoff(model, variables, images: np.ndarray) -> float:
  """Largest difference between JAX's two formulations of the model (fast and
  reference ops) on ``images``: the scale of float32 round-off for this model
  and these inputs, against which an export's difference is judged.

  A trained model can amplify round-off a great deal on inputs unlike its
  training images (random noise): the 8-epoch synthetic demo model differs
  from itself by ~7e-5 there, against ~4e-6 on real images; a freshly
  initialised one by ~1e-7.
  """
  from aulunet_jax import preprocessing
  x = preprocessing.normalize_image(images)
  fast = np.asarray(model.apply(variables, x, train=False))
  with ops.reference_ops():
    reference = np.asarray(model.apply(variables, x, train=False))
  return float(np.abs(fast - reference).max())


def call_latency_ms(runner, image_size: int, input_dtype: str, repeats: int = 50) -> Dict[str, float]:
  """Median and best wall time of one call on a batch of the runner's batch
  size (one image when it takes any), after 5 warm-up calls."""
  image = random_images(runner.batch_size or 1, image_size, input_dtype)
  for _ in range(5):
    runner(image)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    runner(image)
    times.append((time.perf_counter() - start) * 1e3)
  return {"median_ms": float(np.median(times)), "min_ms": float(np.min(times))}
