"""Trains AULUNet as in the paper, then tests the best checkpoint.

  python -m launch.train --flagfile=isic2017.flags           # the paper's protocol on ISIC 2017
  python -m launch.train --flagfile=isic2018.flags
  python -m launch.train --flagfile=demo.flags              # the same code on the synthetic data, in minutes

A --flagfile that does not exist in the working directory is looked up among
the flagfiles bundled in launch/. Flags after the flagfile override it.
Rerunning a command resumes from its --workdir. --runs=5 trains seeds
seed..seed+4 into <workdir>/seed_<s>/ and writes results.md / results.csv.

Across processes (e.g. two machines), run on each:
  python -m launch.train ... --coordinator_address=HOST:PORT --num_processes=2 --process_id=I
"""

import logging as std_logging
import os
import re
import sys

from absl import app, flags, logging

from aulunet_jax import allocator

LAUNCH_DIR = os.path.dirname(os.path.abspath(__file__))
_PROJECT_DIRS = (LAUNCH_DIR, os.path.join(os.path.dirname(LAUNCH_DIR), "aulunet_jax"))

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, figures and results.",
                               required=True)
_MODEL = flags.DEFINE_string("model", "aulunet_v3", "Registered model name (see aulunet_jax.list_models()).")
_USE_AKF = flags.DEFINE_bool("use_akf", None, "Ablation switch: AKF blocks (default: the model's own).")
_USE_RGF = flags.DEFINE_bool("use_rgf", None, "Ablation switch: the RGF bottleneck (default: the model's own).")
_USE_LSG = flags.DEFINE_bool("use_lsg", None, "Ablation switch: LSG skip gates (default: the model's own).")
_AKF_DILATIONS = flags.DEFINE_list("akf_dilations", None, "AKF's two dilations, e.g. 1,3 (default: the model's).")
_AKF_GATE = flags.DEFINE_enum("akf_gate", None, ["channel", "equal", "spatial"], "AKF gating (default: the model's).")
_DATASET = flags.DEFINE_string("dataset", "isic/2017", "isic/2017, isic/2018 or isic/synthetic (optionally :version).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: $TFDS_DATA_DIR or "
                                "~/tensorflow_datasets).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the initialisation, the shuffling and the augmentation.")
_GLOBAL_BATCH_SIZE = flags.DEFINE_integer("global_batch_size", 8, "Training batch over all devices and processes.")
_EVAL_BATCH_SIZE = flags.DEFINE_integer("eval_batch_size", 8, "Evaluation batch over all devices and processes.")
_EPOCHS = flags.DEFINE_integer("epochs", 400, "Training epochs.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "AdamW's initial learning rate.")
_B1 = flags.DEFINE_float("b1", 0.9, "AdamW beta1.")
_B2 = flags.DEFINE_float("b2", 0.999, "AdamW beta2.")
_EPS = flags.DEFINE_float("eps", 1e-8, "AdamW epsilon.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 1e-2, "AdamW's decoupled weight decay, on all parameters.")
_T_MAX = flags.DEFINE_integer("t_max", 50, "CosineAnnealingLR's T_max, in epochs.")
_ETA_MIN = flags.DEFINE_float("eta_min", 1e-5, "CosineAnnealingLR's eta_min.")
_BCE_WEIGHT = flags.DEFINE_float("bce_weight", 1.0, "Weight of the BCE term of the loss.")
_DICE_WEIGHT = flags.DEFINE_float("dice_weight", 1.0, "Weight of the Dice term of the loss.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "Probability threshold of the metrics.")
_COMPUTE_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                                   "Activation dtype; parameters, BatchNorm statistics and the loss stay float32.")
_VAL_INTERVAL = flags.DEFINE_integer("val_interval", 30, "Epochs between full validation metrics (the validation "
                                     "loss is computed every epoch).")
_AUGMENT = flags.DEFINE_bool("augment", True, "The reference's training augmentation.")
_WORKER_COUNT = flags.DEFINE_integer("worker_count", 0, "Data-loading worker processes (0: in this process).")
_NUM_FIGURES = flags.DEFINE_integer("num_figures", 6, "Test images in the qualitative figure.")
_PROGRESS_BAR = flags.DEFINE_bool("progress_bar", True, "Show a progress bar per epoch.")
_RUNS = flags.DEFINE_integer("runs", 1, "Independent runs (seeds seed, seed+1, ...), summarised as mean ± std.")
_COORDINATOR_ADDRESS = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a "
                                           "multi-process run.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")


def resolve_flagfiles(argv):
  """Replaces --flagfile=NAME by the bundled launch/NAME when NAME is not a
  file in the working directory but is bundled."""
  resolved, i = [], 0
  while i < len(argv):
    arg = argv[i]
    name, rest = arg.partition("=")[::2] if arg.startswith(("--flagfile=", "-flagfile=")) else (None, None)
    if arg in ("--flagfile", "-flagfile") and i + 1 < len(argv):
      name, rest, i = arg, argv[i + 1], i + 1
    if name is not None and not os.path.exists(rest) and os.path.exists(os.path.join(LAUNCH_DIR, rest)):
      rest = os.path.join(LAUNCH_DIR, rest)
    resolved.append(arg if name is None else f"{name}={rest}")
    i += 1
  return resolved


def _project_info_and_all_warnings(record) -> bool:
  """Log filter: this project's INFO lines, everyone's warnings (orbax, jax
  and grain log every checkpoint and compilation at INFO)."""
  return record.levelno >= std_logging.WARNING or os.path.abspath(record.pathname).startswith(_PROJECT_DIRS)


def _synthetic_config(dataset: str):
  """The isic builder config that makes a synthetic ``dataset``: 'isic/synthetic'
  is the builder's own config, 'isic/synthetic_<size>' the synthetic images
  at <size> pixels (named as the data README names it); None for ISIC data."""
  name = dataset.split(":")[0].partition("/")[2]
  if name == "synthetic":
    return name
  size = re.fullmatch(r"synthetic_(\d+)", name)
  return {"name": name, "source": "synthetic", "image_size": int(size.group(1))} if size else None


def _model_overrides():
  overrides = {"use_akf": _USE_AKF.value, "use_rgf": _USE_RGF.value, "use_lsg": _USE_LSG.value,
               "akf_gate": _AKF_GATE.value}
  if _AKF_DILATIONS.value is not None:
    overrides["akf_dilations"] = [int(d) for d in _AKF_DILATIONS.value]
  return {k: v for k, v in overrides.items() if v is not None}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from aulunet_jax import distributed
  distributed.initialize(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value)

  import jax

  from aulunet_jax import input_pipeline, runs, train

  config = train.TrainConfig(
      model=_MODEL.value, model_overrides=_model_overrides(), dataset=_DATASET.value, data_dir=_DATA_DIR.value,
      seed=_SEED.value, global_batch_size=_GLOBAL_BATCH_SIZE.value, eval_batch_size=_EVAL_BATCH_SIZE.value,
      epochs=_EPOCHS.value, learning_rate=_LEARNING_RATE.value, b1=_B1.value, b2=_B2.value, eps=_EPS.value,
      weight_decay=_WEIGHT_DECAY.value, t_max=_T_MAX.value, eta_min=_ETA_MIN.value, bce_weight=_BCE_WEIGHT.value,
      dice_weight=_DICE_WEIGHT.value, threshold=_THRESHOLD.value, compute_dtype=_COMPUTE_DTYPE.value,
      val_interval=_VAL_INTERVAL.value, augment=_AUGMENT.value, worker_count=_WORKER_COUNT.value,
      num_figures=_NUM_FIGURES.value, progress_bar=_PROGRESS_BAR.value)
  try:
    synthetic = _synthetic_config(config.dataset)
    if synthetic is not None:
      input_pipeline.build_synthetic_if_missing(config.data_dir, synthetic)
    if jax.process_index() == 0:
      os.makedirs(_WORKDIR.value, exist_ok=True)
      with open(os.path.join(_WORKDIR.value, "flags.txt"), "w") as f:
        f.write(flags.FLAGS.flags_into_string())
    if _RUNS.value > 1:
      results = runs.train_repeated(config, _WORKDIR.value, _RUNS.value)
      logging.info("%d runs, test results:\n%s", len(results),
                   open(os.path.join(_WORKDIR.value, "results.md")).read())
    else:
      train.train_and_evaluate(config, _WORKDIR.value)
  except (input_pipeline.DatasetNotPreparedError, train.NonFiniteLossError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  allocator.relaunch_with_fast_allocator()
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_project_info_and_all_warnings)
  app.run(main, argv=resolve_flagfiles(sys.argv))
