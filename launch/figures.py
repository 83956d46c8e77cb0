"""The paper's figures from trained models.

Figure 2, parameters (M) against mIoU (%), colour = GFLOPs, one point per
setting of repeated runs (mean, with the standard deviation as error bar),
plus the published points of published_results.csv for the same dataset:

  python -m launch.figures --figure=params_vs_miou --runs=W1[,W2,...] [--labels=a,b] --output=fig2.png

Each --runs entry is the results.csv of repeated runs (launch.train --runs=N),
a finished training workdir, or a directory of them (the seeds). Figure 3, qualitative panels (image, ground truth,
prediction with its errors outlined in red) for any checkpoint and split:

  python -m launch.figures --figure=qualitative --checkpoint=C --dataset=isic/2017 --split=test
      [--num_images=6 | --image_ids=ISIC_0000000,...] --output=fig3.png
"""

from absl import app, flags

_FIGURE = flags.DEFINE_enum("figure", None, ["params_vs_miou", "qualitative"], "Which figure.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Output PNG file.", required=True)
_RUNS = flags.DEFINE_list("runs", [], "params_vs_miou: results.csv tables of repeated runs, training workdirs, "
                          "or directories of them.")
_LABELS = flags.DEFINE_list("labels", [], "params_vs_miou: a label per --runs entry (default: the model name).")
_PUBLISHED = flags.DEFINE_bool("published", True, "params_vs_miou: add the published points for the dataset.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "params_vs_miou: input size at which GFLOPs are counted.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "qualitative: inference/training checkpoint or workdir.")
_DATASET = flags.DEFINE_string("dataset", "isic/2017", "qualitative: prepared dataset.")
_SPLIT = flags.DEFINE_string("split", "test", "qualitative: split.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "qualitative: TFDS data directory.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 6, "qualitative: images spread evenly over the split.")
_IMAGE_IDS = flags.DEFINE_list("image_ids", [], "qualitative: these images instead.")


def params_vs_miou():
  from aulunet_jax import figures

  if not _RUNS.value:
    raise app.UsageError("--figure=params_vs_miou needs --runs")
  if _LABELS.value and len(_LABELS.value) != len(_RUNS.value):
    raise app.UsageError(f"--labels has {len(_LABELS.value)} entries for {len(_RUNS.value)} --runs")
  labels = _LABELS.value or [None] * len(_RUNS.value)
  points, datasets = [], set()
  for path, label in zip(_RUNS.value, labels):
    try:
      point, dataset = figures.read_runs(path, label, _IMAGE_SIZE.value)
    except (FileNotFoundError, ValueError) as e:
      raise app.UsageError(f"--runs: {e}") from None
    points.append(point)
    datasets.add(dataset)
    std = f" ± {point.miou_std:.2f}" if point.miou_std is not None else ""
    print(f"{point.label}: {point.params_m:.4f} M parameters, {point.gflops:.4f} GFLOPs, mIoU {point.miou:.2f}{std} % "
          f"({dataset}, {path})")
  if len(datasets) > 1:
    raise app.UsageError(f"--runs mix datasets {sorted(datasets)}; one figure compares models on one dataset")
  dataset = datasets.pop()
  if _PUBLISHED.value:
    published = figures.read_published_points(dataset=dataset)
    for p in published:
      print(f"{p.label} (published): {p.params_m} M, {p.gflops} GFLOPs, mIoU {p.miou} % — {p.source}")
    points += published
  figures.save_params_vs_miou(points, _OUTPUT.value, title=dataset)
  print(f"wrote {_OUTPUT.value}")


def qualitative():
  from aulunet_jax import checkpoints, evaluate, figures, input_pipeline

  if not _CHECKPOINT.value:
    raise app.UsageError("--figure=qualitative needs --checkpoint")
  model, variables = checkpoints.load_inference_checkpoint(_CHECKPOINT.value)
  try:
    examples = evaluate.predict_examples(model, variables, _DATASET.value, _SPLIT.value, _DATA_DIR.value,
                                         num_images=_NUM_IMAGES.value, image_ids=_IMAGE_IDS.value)
  except input_pipeline.DatasetNotPreparedError as e:
    raise app.UsageError(str(e)) from None
  figures.save_qualitative_panels(examples["image"], examples["mask"], examples["probs"], _OUTPUT.value,
                                  ids=examples["image_id"])
  print(f"wrote {_OUTPUT.value}: {', '.join(examples['image_id'])}")


def main(argv):
  del argv
  params_vs_miou() if _FIGURE.value == "params_vs_miou" else qualitative()


if __name__ == "__main__":
  app.run(main)
