"""Segments image files with a trained model, writing ISIC-style masks.

  python -m launch.predict --checkpoint=C --input=DIR_OR_FILES --output=DIR
      [--overlays] [--probability_maps] [--overwrite] [--image_size=256] [--batch_size=8]

--input takes directories (searched recursively) and files, comma-separated.
JPEG, PNG, BMP and TIFF of any size are read (EXIF orientation honoured;
RGBA, greyscale and 16-bit accepted). For each image <stem>.ext, --output
gets <stem>_segmentation.png (0/255, the image's size), and with the options
<stem>_overlay.png and <stem>_probability.png. Unreadable files are reported
and skipped; the exit status is 1 if any failed.
"""

import sys

from absl import app, flags

from aulunet_jax import allocator

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Inference checkpoint, training checkpoint or training workdir.",
                                  required=True)
_INPUT = flags.DEFINE_list("input", None, "Image files and/or directories, comma-separated.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Output directory.", required=True)
_OVERLAYS = flags.DEFINE_bool("overlays", False, "Also write <stem>_overlay.png (lesion tinted and outlined).")
_PROBABILITY_MAPS = flags.DEFINE_bool("probability_maps", False,
                                      "Also write <stem>_probability.png (probability x 255, greyscale).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace outputs that exist.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "The model's input size (the training size).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "Probability at or above which a pixel is lesion.")


def main(argv):
  del argv
  import tqdm

  from aulunet_jax import predict

  try:
    paths, passed_over = predict.find_images(_INPUT.value)
  except FileNotFoundError as e:
    raise app.UsageError(f"--input: {e}") from None
  for note in passed_over:
    print(f"passed over {note}", file=sys.stderr)
  if not paths:
    raise app.UsageError(f"--input {','.join(_INPUT.value)} holds no JPEG, PNG, BMP or TIFF images")
  segmenter = predict.Segmenter.from_checkpoint(_CHECKPOINT.value, image_size=_IMAGE_SIZE.value,
                                                batch_size=_BATCH_SIZE.value, threshold=_THRESHOLD.value)
  progress = lambda batches: tqdm.tqdm(batches, desc="predict", unit="batch", file=sys.stderr)
  try:
    report = predict.predict_files(segmenter, paths, _OUTPUT.value, overlays=_OVERLAYS.value,
                                   probability_maps=_PROBABILITY_MAPS.value, overwrite=_OVERWRITE.value,
                                   progress=progress)
  except FileExistsError as e:
    raise app.UsageError(str(e)) from None
  for failure in report.failed:
    print(f"FAILED {failure}", file=sys.stderr)
  done = len(paths) - len(report.failed)
  print(f"segmented {done} of {len(paths)} images into {_OUTPUT.value} ({len(report.written)} files written)")
  if report.failed:
    print(f"{len(report.failed)} images could not be read (listed above)", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  allocator.relaunch_with_fast_allocator()
  app.run(main)
