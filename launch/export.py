"""Exports a trained model as a TensorFlow SavedModel or a TFLite file.

  python -m launch.export --checkpoint=C --format=savedmodel|tflite --output=PATH
      [--image_size=256] [--input_dtype=uint8|float32] [--batch_size=1] [--overwrite]

The exported model takes (N, S, S, 3) RGB images resized to --image_size,
uint8 or float32 (any range; the per-image min-max normalisation of training
is inside the model), and returns probabilities (N, S, S, 1); N is free in a
SavedModel and --batch_size in a TFLite model. The command checks the export
against JAX on random images, then reports the file size and the latency of
one call (one image, or one TFLite batch) on this CPU. It fails when the
difference exceeds both --tolerance and ten times JAX's own float32
round-off on the same images (its fast and reference formulations of the
model differ by that much): round-off grows with a trained model's gain,
while an export error shows as differences of order 0.1 to 1.
Needs TensorFlow (pip install -e '.[data]').
"""

import json
import os
import shutil

from absl import app, flags

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Inference checkpoint, training checkpoint or training workdir.",
                                  required=True)
_FORMAT = flags.DEFINE_enum("format", None, ["savedmodel", "tflite"], "Export format.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "SavedModel directory or .tflite file.", required=True)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "The model's input size (the training size).")
_INPUT_DTYPE = flags.DEFINE_enum("input_dtype", "uint8", ["uint8", "float32"], "Input type of the exported model.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "TFLite: the model's fixed batch size (default 1).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")
_TOLERANCE = flags.DEFINE_float("tolerance", 1e-5, "Accepted |exported - JAX| on random images, whatever the "
                                 "model's own round-off.")
_REPORT = flags.DEFINE_enum("report", "table", ["table", "json"], "Report format.")


def main(argv):
  del argv
  from aulunet_jax import checkpoints, export

  if _BATCH_SIZE.value is not None and _FORMAT.value == "savedmodel":
    raise app.UsageError("--batch_size is for TFLite; a SavedModel takes any batch size")
  output = _OUTPUT.value
  if os.path.exists(output):
    if not _OVERWRITE.value:
      raise app.UsageError(f"--output {output!r} exists; pass --overwrite to replace it")
    shutil.rmtree(output) if os.path.isdir(output) else os.remove(output)
  model, variables = checkpoints.load_inference_checkpoint(_CHECKPOINT.value)
  export.export(model, variables, output, _FORMAT.value, image_size=_IMAGE_SIZE.value,
                input_dtype=_INPUT_DTYPE.value, batch_size=_BATCH_SIZE.value)
  runner = export.load_runner(output, _FORMAT.value)
  # Four random images: one batch for a SavedModel, batches of the model's size for TFLite.
  batch = runner.batch_size or 4
  batches = [export.random_images(batch, _IMAGE_SIZE.value, _INPUT_DTYPE.value, seed=i)
             for i in range(-(-4 // batch))]
  diff = max(export.max_abs_difference(model, variables, runner, images) for images in batches)
  roundoff = max(export.jax_roundoff(model, variables, images) for images in batches)
  limit = max(_TOLERANCE.value, 10 * roundoff)
  latency = export.call_latency_ms(runner, _IMAGE_SIZE.value, _INPUT_DTYPE.value)
  report = {"output": output, "format": _FORMAT.value, "image_size": _IMAGE_SIZE.value,
            "input_dtype": _INPUT_DTYPE.value, "batch_size": runner.batch_size, "size_bytes": export.size_bytes(output),
            "max_abs_diff_vs_jax": diff, "jax_roundoff": roundoff, "latency_ms_median": latency["median_ms"],
            "latency_ms_min": latency["min_ms"]}
  if _REPORT.value == "json":
    print(json.dumps(report))
  else:
    n = runner.batch_size or "N"
    print(f"wrote {output} ({_FORMAT.value}, input {_INPUT_DTYPE.value} ({n}, {_IMAGE_SIZE.value}, "
          f"{_IMAGE_SIZE.value}, 3) -> probabilities ({n}, {_IMAGE_SIZE.value}, {_IMAGE_SIZE.value}, 1))")
    print(f"  size                      {report['size_bytes'] / 1e3:,.1f} KB")
    print(f"  max |exported - JAX|      {diff:.1e} on 4 random images (JAX's own float32 round-off there: "
          f"{roundoff:.1e})")
    print(f"  latency of one call       {latency['median_ms']:.2f} ms median, {latency['min_ms']:.2f} ms best "
          f"({runner.batch_size or 1} image{'s' if (runner.batch_size or 1) > 1 else ''}, this CPU)")
  if not diff <= limit:
    raise SystemExit(f"the export differs from JAX by {diff:.2e}, more than --tolerance={_TOLERANCE.value} and "
                     f"ten times JAX's own round-off ({roundoff:.1e})")


if __name__ == "__main__":
  app.run(main)
