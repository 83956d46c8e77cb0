"""Evaluates a trained model on a prepared split.

  python -m launch.evaluate --workdir=W | --checkpoint=C --dataset=isic/2017 --split=test
      [--protocol=paper|isic_challenge] [--manual_dir=D] [--per_image=FILE.csv] [--masks_dir=DIR]
      [--format=table|json]

--protocol=paper (default): one pixel confusion matrix at the stored size
over the split; mIoU, DSC, accuracy, sensitivity, specificity.
--protocol=isic_challenge: predictions resized back to each image's original
size and scored per image against the original masks in --manual_dir, as the
ISIC challenge's scorer does; macro averages. --masks_dir also writes the
original-size masks in the challenge's submission format.
"""

import json
import sys

from absl import app, flags

from aulunet_jax import allocator

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (its best checkpoint is evaluated).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Inference or training checkpoint.")
_DATASET = flags.DEFINE_string("dataset", "isic/2017", "Prepared dataset, e.g. isic/2017, isic/2018, isic/synthetic.")
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default $TFDS_DATA_DIR or "
                                "~/tensorflow_datasets).")
_PROTOCOL = flags.DEFINE_enum("protocol", "paper", ["paper", "isic_challenge"], "Evaluation protocol.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder with the ISIC archives (isic_challenge protocol).")
_PER_IMAGE = flags.DEFINE_string("per_image", None, "Write per-image counts and scores to this CSV file.")
_MASKS_DIR = flags.DEFINE_string("masks_dir", None, "isic_challenge: write <id>_segmentation.png masks here.")
_FORMAT = flags.DEFINE_enum("format", "table", ["table", "json"], "Output format.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "Probability at or above which a pixel is lesion.")

flags.register_multi_flags_validator(["workdir", "checkpoint"], lambda f: (f["workdir"] is None) !=
                                     (f["checkpoint"] is None), "pass exactly one of --workdir and --checkpoint")


def main(argv):
  del argv
  import tqdm

  from aulunet_jax import checkpoints, evaluate, input_pipeline

  checkpoint = _WORKDIR.value or _CHECKPOINT.value
  model, variables = checkpoints.load_inference_checkpoint(checkpoint)
  progress = lambda batches: tqdm.tqdm(batches, desc=f"evaluate {_SPLIT.value}", unit="batch", file=sys.stderr,
                                       disable=_FORMAT.value == "json")
  try:
    result = evaluate.evaluate(model, variables, _DATASET.value, _SPLIT.value, _DATA_DIR.value,
                               protocol=_PROTOCOL.value, manual_dir=_MANUAL_DIR.value, masks_dir=_MASKS_DIR.value,
                               batch_size=_BATCH_SIZE.value, threshold=_THRESHOLD.value, progress=progress)
  except input_pipeline.DatasetNotPreparedError as e:
    raise app.UsageError(str(e)) from None
  if _PER_IMAGE.value:
    evaluate.write_per_image_csv(result, _PER_IMAGE.value)
  if _FORMAT.value == "json":
    print(json.dumps({"protocol": result.protocol, "dataset": result.dataset, "split": result.split,
                      "checkpoint": checkpoint, "num_images": result.num_images, **result.metrics}))
  else:
    print(evaluate.format_table(result))
    if _PER_IMAGE.value:
      print(f"\nper-image scores: {_PER_IMAGE.value}")


if __name__ == "__main__":
  allocator.relaunch_with_fast_allocator()
  app.run(main)
