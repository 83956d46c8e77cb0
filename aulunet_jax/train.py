"""Training and evaluation as in the paper (the reference's train.py).

Protocol: AdamW (lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2
on every parameter, as torch.optim.AdamW's defaults apply it), the rate
following torch's CosineAnnealingLR stepped once per epoch (T_max 50,
eta_min 1e-5), BCE + Dice loss (weights 1, 1), global batch 8, 400 epochs.
Each epoch ends with the validation loss; every ``val_interval`` epochs the
full validation metrics are logged too. The checkpoint with the lowest
validation loss is ``best``; at the end it is evaluated on the test split.

The step functions are pure and meant for ``jax.pmap`` with
``axis_name='batch'`` over all local devices (and, after
``aulunet_jax.distributed.initialize``, across processes): gradients and
metrics are averaged with ``lax.pmean``, BatchNorm statistics are computed
across devices (the model is built with ``axis_name='batch'``), parameters
are replicated and the state's buffers donated. Because every device holds
the same number of examples, the mean of the per-device losses is the loss
of the global batch, so N devices compute what one device computes on the
whole batch.

``train_and_evaluate(config, workdir)`` is the whole run: it resumes from
``workdir`` if a checkpoint is there and continues exactly as if it had not
stopped (the train state, the epoch, the best-so-far and the data iterator's
position are checkpointed; nothing else is random).
"""

import dataclasses
import functools
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import jax_utils
from flax.training import train_state
from jax import lax
from jax.experimental import multihost_utils
from tqdm import tqdm

from aulunet_jax import checkpoints, figures, input_pipeline, losses, metrics, schedules, writers
from aulunet_jax.models.registry import build_model

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Settings that a resumed run must share with the run that wrote the
# checkpoint, or it would not continue the same training.
_RESUME_INVARIANTS = ("model", "model_overrides", "dataset", "train_split", "seed", "global_batch_size",
                      "learning_rate", "b1", "b2", "eps", "weight_decay", "t_max", "eta_min", "bce_weight",
                      "dice_weight", "augment", "compute_dtype")


@dataclasses.dataclass
class TrainConfig:
  """Settings of a training run; the defaults are the paper's."""
  model: str = "aulunet_v3"
  model_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {'use_rgf': False}
  dataset: str = "isic/2017"
  data_dir: Optional[str] = None
  train_split: str = "train"
  val_split: str = "validation"
  test_split: str = "test"
  seed: int = 0
  global_batch_size: int = 8
  eval_batch_size: int = 8  # the metrics do not depend on it (the reference evaluates one image at a time)
  epochs: int = 400
  learning_rate: float = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 1e-2
  t_max: int = 50
  eta_min: float = 1e-5
  bce_weight: float = 1.0
  dice_weight: float = 1.0
  threshold: float = 0.5
  compute_dtype: str = "float32"
  val_interval: int = 30
  augment: bool = True
  worker_count: int = 0
  num_figures: int = 6
  progress_bar: bool = True


class TrainState(train_state.TrainState):
  batch_stats: Any


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


def per_device_batch_size(global_batch_size: int, what: str = "global batch size") -> int:
  """``global_batch_size`` split evenly over all devices of all processes."""
  devices = jax.device_count()
  if global_batch_size <= 0 or global_batch_size % devices:
    raise ValueError(f"the {what} {global_batch_size} does not divide evenly over the {devices} devices "
                     f"({jax.process_count()} process(es) x {jax.local_device_count()} local device(s)); use a "
                     f"positive multiple of {devices}")
  return global_batch_size // devices


def create_model(config: TrainConfig, axis_name: Optional[str] = "batch"):
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got {config.compute_dtype!r}")
  return build_model(config.model, axis_name=axis_name, dtype=COMPUTE_DTYPES[config.compute_dtype],
                     **config.model_overrides)


def create_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """AdamW whose hyperparameters live in its state (``opt_state.hyperparams``).

  optax.adamw, like torch.optim.AdamW, decays the weights by lr * wd * w
  (decoupled) and adds eps outside the square root; with no mask it decays
  every parameter, BatchNorm scales and biases included, as the reference
  does. The rate is set each epoch by ``train_step``'s ``learning_rate``, as
  torch's scheduler sets it once per epoch; being values rather than
  constants of the compiled step, the hyperparameters can change without
  recompiling it.
  """
  return optax.inject_hyperparams(optax.adamw)(learning_rate=config.learning_rate, b1=config.b1, b2=config.b2,
                                               eps=config.eps, weight_decay=config.weight_decay)


def create_train_state(rng, model, image_shape: Tuple[int, int, int], tx) -> TrainState:
  """A fresh train state: the model initialised on one (1, H, W, C) input."""
  init = jax.jit(functools.partial(model.init, train=False))
  variables = init(rng, jnp.zeros((1, *image_shape), jnp.float32))
  return TrainState.create(apply_fn=model.apply, params=variables["params"], batch_stats=variables["batch_stats"],
                           tx=tx)


def train_step(state: TrainState, batch, learning_rate, bce_weight: float = 1.0, dice_weight: float = 1.0,
               threshold: float = 0.5):
  """One optimisation step on this device's part of the global batch, at
  ``learning_rate`` (the optimizer is ``create_optimizer``'s).

  Returns the new state and {'loss': loss of the global batch, 'confusion':
  its [TP, FP, FN, TN] at ``threshold``}.
  """
  hyperparams = dict(state.opt_state.hyperparams, learning_rate=jnp.asarray(learning_rate, jnp.float32))
  state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))

  def loss_fn(params):
    probs, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, batch["image"],
                                    train=True, mutable=["batch_stats"])
    return losses.bce_dice_loss(probs, batch["mask"], bce_weight, dice_weight), (probs, updates["batch_stats"])

  (loss, (probs, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = lax.pmean(grads, axis_name="batch")
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  step_metrics = {"loss": lax.pmean(loss, axis_name="batch"),
                  "confusion": lax.psum(metrics.confusion_counts(probs, batch["mask"], threshold), axis_name="batch")}
  return new_state, step_metrics


def eval_step(state: TrainState, batch, bce_weight: float = 1.0, dice_weight: float = 1.0, threshold: float = 0.5):
  """Per-example loss, per-image confusion counts and probabilities, in
  inference mode (BatchNorm running statistics)."""
  probs = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False)
  return {"loss": losses.per_example_bce_dice_loss(probs, batch["mask"], bce_weight, dice_weight),
          "confusion": metrics.per_image_confusion(probs, batch["mask"], threshold), "probs": probs}


def _sum_over_processes(values: np.ndarray) -> np.ndarray:
  """Sums a float64 vector over JAX processes, bit-exactly (sent as uint32
  words, since JAX arrays are float32 unless x64 is enabled)."""
  if jax.process_count() == 1:
    return values
  gathered = np.asarray(multihost_utils.process_allgather(np.ascontiguousarray(values, np.float64).view(np.uint32)))
  return np.ascontiguousarray(gathered).view(np.float64).sum(axis=0)


def evaluate(p_eval_step, state, batches: Iterable[Dict[str, Any]], keep: int = 0):
  """Metrics of a whole split, from one pass over ``batches`` (padded
  batches with a 'valid' mask, as ``input_pipeline.eval_iterator`` gives).

  Returns (scores, kept): scores holds the mean per-example loss, the
  paper's metrics from one confusion matrix over all pixels (``metrics.NAMES``),
  the per-image means of Dice, Jaccard and thresholded Jaccard (the ISIC
  scorer's), and the number of examples; kept holds the images, masks,
  probabilities and ids of this process's first ``keep`` examples.
  """
  # loss, examples, TP, FP, FN, TN, dice, jaccard, thresholded jaccard (sums)
  totals = np.zeros(9, np.float64)
  kept = {"image": [], "mask": [], "probs": [], "image_id": []}
  num_kept = 0
  for batch in batches:
    out = p_eval_step(state, {k: batch[k] for k in ("image", "mask")})
    valid = np.asarray(batch["valid"]).reshape(-1)
    loss = np.asarray(out["loss"], np.float64).reshape(-1)[valid]
    confusion = np.asarray(out["confusion"], np.float64).reshape(-1, 4)[valid]
    scores = metrics.per_image_scores(confusion)
    totals += np.concatenate([[loss.sum(), valid.sum()], confusion.sum(axis=0),
                              [scores["dice"].sum(), scores["jaccard"].sum(), scores["threshold_jaccard"].sum()]])
    if num_kept < keep:
      take = min(keep - num_kept, int(valid.sum()))
      flat = lambda x: np.asarray(x).reshape(-1, *np.shape(x)[2:])[valid][:take]
      for name in ("image", "mask"):
        kept[name].append(flat(batch[name]))
      kept["probs"].append(flat(out["probs"]))
      if "image_id" in batch:
        kept["image_id"].extend(str(i) for i in flat(batch["image_id"]))
      num_kept += take
  totals = _sum_over_processes(totals)
  n = totals[1]
  if n == 0:
    raise ValueError("evaluation saw no examples")
  result = {"loss": totals[0] / n, **metrics.summarize(totals[2:6]), "mean_dice": totals[6] / n,
            "mean_jaccard": totals[7] / n, "threshold_jaccard": totals[8] / n, "num_examples": int(n)}
  kept = {k: (np.concatenate(v) if k != "image_id" and v else v) for k, v in kept.items()}
  return result, kept


def environment() -> Dict[str, Any]:
  """Package versions and devices, saved with each run."""
  packages = {}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets", "numpy",
               "aulunet-jax"):
    try:
      packages[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      packages[name] = None
  return {"python": sys.version, "platform": platform.platform(), "packages": packages,
          "backend": jax.default_backend(), "process_count": jax.process_count(),
          "local_devices": [str(d) for d in jax.local_devices()], "devices": [str(d) for d in jax.devices()]}


def _write_json(path: str, value: Any):
  """Writes JSON atomically (a temporary file renamed into place)."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)


def _unreplicate(tree):
  """This process's first device copy of a replicated tree, as host arrays."""
  return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0))[0], tree)


def _check_resumable(saved: Mapping[str, Any], config: TrainConfig, path: str):
  current = json.loads(json.dumps(dataclasses.asdict(config)))
  differ = [k for k in _RESUME_INVARIANTS if saved.get(k) != current.get(k)]
  if differ:
    details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ)
    raise ValueError(f"the checkpoint {path} belongs to a run with other settings ({details}); resume with the "
                     f"same settings or train in another workdir")


def _markdown_table(rows: Iterable[Tuple[str, Mapping[str, float]]]) -> str:
  header = "| split | mIoU (%) | DSC (%) | Acc (%) | Sen (%) | Spe (%) |\n|---|---:|---:|---:|---:|---:|\n"
  return header + "".join(f"| {name} | " + " | ".join(f"{100 * m[k]:.2f}" for k in metrics.NAMES) + " |\n"
                          for name, m in rows)


class _EpochProgress:
  """Per-epoch progress bar (loss, images/s) and the running train metrics.

  Losses are read one step late, so that reading a step's loss never stalls
  the dispatch of the next step.
  """

  def __init__(self, epoch: int, epochs: int, steps: int, images_per_step: int, enabled: bool):
    self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step", disable=not enabled, leave=False,
                    dynamic_ncols=True)
    self.epoch, self.images_per_step = epoch, images_per_step
    self.losses, self.confusion = [], np.zeros(4, np.float64)
    self.first_done = None

  def record(self, step_metrics, last_checkpoint: Optional[str]):
    step_metrics = _unreplicate(step_metrics)
    loss = float(step_metrics["loss"])
    if not math.isfinite(loss):
      self.bar.close()
      raise NonFiniteLossError(
          f"the training loss became {loss} at epoch {self.epoch}, step {len(self.losses) + 1}; training stopped "
          f"and nothing after the last good checkpoint was saved. Last good checkpoint: "
          f"{last_checkpoint or 'none (no epoch had finished)'}")
    self.losses.append(loss)
    self.confusion += step_metrics["confusion"]
    now = time.perf_counter()
    if self.first_done is None:
      self.first_done = now  # the first step includes compilation; throughput counts from here
    self.bar.update(1)
    postfix = {"loss": f"{loss:.4f}"}
    images_per_second = self.images_per_second(now)
    if math.isfinite(images_per_second):  # from the second step on
      postfix["img_s"] = f"{images_per_second:.1f}"
    self.bar.set_postfix(postfix, refresh=False)

  def images_per_second(self, now=None) -> float:
    steps = len(self.losses) - 1
    elapsed = (now or time.perf_counter()) - (self.first_done or 0)
    return steps * self.images_per_step / elapsed if steps > 0 and elapsed > 0 else float("nan")

  def close(self) -> Dict[str, float]:
    self.bar.close()
    return {"loss": float(np.mean(self.losses)), "dsc": metrics.summarize(self.confusion)["dsc"],
            "images_per_second": self.images_per_second()}


def _train_epoch(p_train_step, state, train_iter, steps: int, learning_rate: float, progress: _EpochProgress,
                 last_checkpoint: Optional[str]):
  """Runs one epoch of ``steps`` steps; raises NonFiniteLossError naming
  ``last_checkpoint`` if the loss stops being finite."""
  pending = None
  learning_rate = np.float32(learning_rate)
  for _ in range(steps):
    state, step_metrics = p_train_step(state, next(train_iter), learning_rate)
    if pending is not None:
      progress.record(pending, last_checkpoint)
    pending = step_metrics
  progress.record(pending, last_checkpoint)
  return state


def train_and_evaluate(config: TrainConfig, workdir: str) -> Dict[str, Any]:
  """Trains (or resumes) in ``workdir``, tests the best checkpoint, and
  returns the test results (also written to ``<workdir>/results.json``).

  ``workdir`` receives config.json, environment.json, metrics.jsonl,
  tensorboard/, checkpoints/{latest,best}/, figures/ and results.json.
  """
  is_main = jax.process_index() == 0
  per_device_batch_size(config.global_batch_size)
  per_device_batch_size(config.eval_batch_size, "eval batch size")
  if config.val_interval <= 0:
    raise ValueError(f"val_interval must be a positive number of epochs, got {config.val_interval}")
  workdir = os.path.abspath(workdir)
  data = dict(dataset=config.dataset, data_dir=config.data_dir)
  steps_per_epoch = input_pipeline.steps_per_epoch(split=config.train_split,
                                                   global_batch_size=config.global_batch_size, **data)
  image_shape = tuple(input_pipeline.dataset_source(split=config.train_split, **data).dataset_info
                      .features["image"].shape)
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, "config.json"), dataclasses.asdict(config))
    _write_json(os.path.join(workdir, "environment.json"), environment())

  model = create_model(config)
  spec = checkpoints.model_spec(config.model, **config.model_overrides)
  tx = create_optimizer(config)
  template = jax.device_get(create_train_state(jax.random.PRNGKey(config.seed), model, image_shape, tx))
  train_iter = input_pipeline.train_iterator(split=config.train_split, global_batch_size=config.global_batch_size,
                                             seed=config.seed, augment=config.augment,
                                             worker_count=config.worker_count, **data)
  ckpts = checkpoints.TrainingCheckpoints(workdir)
  writer = writers.MetricWriter(workdir)
  state, start_epoch, best = template, 0, {"val_loss": float("inf"), "epoch": None}
  restored = ckpts.restore_latest(template, train_iter)
  if restored is not None:
    state, meta = restored
    _check_resumable(meta["config"], config, ckpts.path(checkpoints.LATEST))
    start_epoch, best = meta["epoch"], meta["best"]
    if best["epoch"] == start_epoch and ckpts.best_epoch() != start_epoch:
      # Killed between writing `latest` and `best`: this state is the best one.
      ckpts.save_best(start_epoch, state, spec, meta)
    writer.mark_resumed(start_epoch)
    if is_main:
      logging.info("resumed from %s (epoch %d, best validation loss %.5f at epoch %s)",
                   ckpts.path(checkpoints.LATEST), start_epoch, best["val_loss"], best["epoch"])

  step_kwargs = dict(bce_weight=config.bce_weight, dice_weight=config.dice_weight, threshold=config.threshold)
  p_train_step = jax.pmap(functools.partial(train_step, **step_kwargs), axis_name="batch", in_axes=(0, 0, None),
                          donate_argnums=(0,))
  p_eval_step = jax.pmap(functools.partial(eval_step, **step_kwargs), axis_name="batch")
  eval_batches = lambda split: input_pipeline.eval_iterator(split=split, global_batch_size=config.eval_batch_size,
                                                            **data)
  state = jax_utils.replicate(state)
  for epoch in range(start_epoch + 1, config.epochs + 1):
    started = time.perf_counter()
    progress = _EpochProgress(epoch, config.epochs, steps_per_epoch, config.global_batch_size,
                              is_main and config.progress_bar)
    learning_rate = float(schedules.cosine_annealing_lr(epoch - 1, config.learning_rate, config.t_max,
                                                        config.eta_min))
    state = _train_epoch(p_train_step, state, train_iter, steps_per_epoch, learning_rate, progress,
                         ckpts.path(checkpoints.LATEST))
    train_scores = dict(progress.close(), lr=learning_rate)
    val_scores, _ = evaluate(p_eval_step, state, eval_batches(config.val_split))
    full = epoch % config.val_interval == 0 or epoch == config.epochs
    val_logged = val_scores if full else {"loss": val_scores["loss"]}

    host_state = _unreplicate(state)
    if val_scores["loss"] < best["val_loss"]:
      best = {"val_loss": val_scores["loss"], "epoch": epoch}
    meta = {"epoch": epoch, "best": best, "config": dataclasses.asdict(config), "image_shape": list(image_shape)}
    # Metrics before checkpoints: a run killed in between redoes this epoch and
    # logs it again; the other order would lose the epoch's metrics for good.
    writer.write(epoch, "train", train_scores)
    writer.write(epoch, config.val_split, val_logged)
    ckpts.save_latest(epoch, host_state, spec, meta, train_iter)
    if best["epoch"] == epoch:
      ckpts.save_best(epoch, host_state, spec, meta)
    if is_main:
      logging.info("epoch %d/%d: train loss %.4f, train DSC %.4f, %s loss %.4f%s, lr %.3g, %.1f images/s, %.0f s%s",
                   epoch, config.epochs, train_scores["loss"], train_scores["dsc"], config.val_split,
                   val_scores["loss"],
                   f", DSC {val_scores['dsc']:.4f}, mIoU {val_scores['miou']:.4f}" if full else "",
                   train_scores["lr"], train_scores["images_per_second"], time.perf_counter() - started,
                   " (best)" if best["epoch"] == epoch else "")

  best_state, best_meta = ckpts.restore_best(template)
  test_scores, kept = evaluate(p_eval_step, jax_utils.replicate(best_state), eval_batches(config.test_split),
                               keep=config.num_figures)
  results = {**{k: test_scores[k] for k in metrics.NAMES}, "split": config.test_split,
             "checkpoint": ckpts.path(checkpoints.BEST), "epoch": best_meta["epoch"],
             **{k: test_scores[k] for k in ("loss", "mean_dice", "mean_jaccard", "threshold_jaccard",
                                            "num_examples")}}
  writer.write(best_meta["epoch"], config.test_split, test_scores)
  writer.close()
  ckpts.close()
  if is_main:
    _write_json(os.path.join(workdir, "results.json"), results)
    if config.num_figures and len(kept["image"]):
      figures.save_qualitative_panels(kept["image"], kept["mask"], kept["probs"],
                                      os.path.join(workdir, "figures", f"{config.test_split}_qualitative.png"),
                                      threshold=config.threshold, ids=kept["image_id"] or None)
    logging.info("best checkpoint: epoch %d (%s loss %.5f), %s\n%s", best_meta["epoch"], config.val_split,
                 best_meta["best"]["val_loss"], results["checkpoint"],
                 _markdown_table([(f"{config.test_split} ({results['num_examples']} images)", results)]))
  return results
