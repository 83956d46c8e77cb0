"""The paper's figures, drawn with matplotlib's Agg backend (no display).

- ``save_qualitative_panels``: Figure 3's qualitative comparison, one row per
  image: the image, its ground truth, and the prediction with the boundaries
  of the error regions (pixels where prediction and ground truth disagree)
  drawn in red.
- ``save_params_vs_miou``: Figure 2's efficiency plot, parameters (M, log
  scale) against mIoU (%), coloured by GFLOPs (log scale), from repeated-runs
  results tables and, optionally, published reference points
  (``published_results.csv``, each row citing its source).
"""

import csv
import dataclasses
import json
import math
import os
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PUBLISHED_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "published_results.csv")

ERROR_COLOUR = (1.0, 0.0, 0.0)


def _as_display_images(images) -> np.ndarray:
  """(N, H, W, 3|1) or (N, H, W) -> float (N, H, W, 3) in [0, 1], min-max per image
  (the model's input is a per-image min-max to [0, 255], so this shows what it sees)."""
  images = np.asarray(images, np.float64)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images must be (N, H, W, 3), (N, H, W, 1) or (N, H, W), got shape {images.shape}")
  lo = images.min(axis=(1, 2, 3), keepdims=True)
  hi = images.max(axis=(1, 2, 3), keepdims=True)
  images = (images - lo) / np.maximum(hi - lo, 1e-12)
  return np.broadcast_to(images, images.shape[:3] + (3,))


def _as_binary(masks, name: str, threshold: float, n: int, hw) -> np.ndarray:
  """Masks or probabilities in [0, 1] (uint8 masks in 0..255) -> bool (N, H, W)."""
  masks = np.asarray(masks)
  if masks.ndim == 4 and masks.shape[-1] == 1:
    masks = masks[..., 0]
  if masks.shape != (n,) + tuple(hw):
    raise ValueError(f"{name} must have shape ({n}, {hw[0]}, {hw[1]}[, 1]) to match the images, got {masks.shape}")
  if masks.dtype == np.uint8:
    masks = masks / 255.0
  elif masks.size and (masks.min() < 0 or masks.max() > 1):
    raise ValueError(f"{name} must hold values in [0, 1], got [{masks.min()}, {masks.max()}]")
  return masks >= threshold


def _binary_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
  """Dilation by a (2r+1)x(2r+1) square: a running OR along rows, then columns."""
  out = mask.copy()
  for axis in (0, 1):
    grown = out.copy()
    n = out.shape[axis]
    for shift in range(1, min(radius, n - 1) + 1):
      lead = [slice(None)] * 2
      lag = [slice(None)] * 2
      lead[axis], lag[axis] = slice(shift, None), slice(None, n - shift)
      grown[tuple(lead)] |= out[tuple(lag)]
      grown[tuple(lag)] |= out[tuple(lead)]
    out = grown
  return out


def error_boundaries(prediction: np.ndarray, truth: np.ndarray, width: int = 1) -> np.ndarray:
  """Boundary pixels of the regions where ``prediction`` != ``truth`` (both
  bool (H, W)), thickened to about ``width`` pixels.

  A pixel is on the boundary when it is in an error region and one of its 8
  neighbours is not (the image border counts as outside).
  """
  errors = prediction != truth
  padded = np.pad(errors, 1, constant_values=False)
  interior = np.ones_like(errors)
  h, w = errors.shape
  for dy in (0, 1, 2):
    for dx in (0, 1, 2):
      interior &= padded[dy:dy + h, dx:dx + w]
  boundary = errors & ~interior
  return _binary_dilate(boundary, (width - 1) // 2) if width > 1 else boundary


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
  total = prediction.sum() + truth.sum()
  return 1.0 if total == 0 else 2.0 * float((prediction & truth).sum()) / float(total)


def save_qualitative_panels(images, masks, probs, path: str, threshold: float = 0.5,
                            ids: Optional[Sequence[str]] = None) -> str:
  """Writes Figure 3-style panels to ``path`` (PNG), one row per image.

  Args:
    images: (N, H, W, 3) images, any range (shown min-max scaled per image).
    masks: ground truth, (N, H, W[, 1]) in [0, 1] (soft values are binarised
      at ``threshold``) or uint8 0/255.
    probs: the model's probabilities, same shape as ``masks``.
    path: output file; its directory is created.
    threshold: binarisation threshold for masks and probabilities.
    ids: optional row labels (e.g. ISIC image ids).
  Returns:
    ``path``.
  """
  images = _as_display_images(images)
  n, h, w, _ = images.shape
  if n == 0:
    raise ValueError("save_qualitative_panels needs at least one image")
  truth = _as_binary(masks, "masks", threshold, n, (h, w))
  prediction = _as_binary(probs, "probs", threshold, n, (h, w))
  if ids is not None and len(ids) != n:
    raise ValueError(f"ids has {len(ids)} entries for {n} images")
  line_width = max(1, round(max(h, w) / 128))

  cell = 2.4
  fig = Figure(figsize=(3 * cell, n * cell + 0.4), dpi=max(100, math.ceil(max(h, w) / cell)))
  FigureCanvasAgg(fig)
  axes = fig.subplots(n, 3, squeeze=False)
  for i in range(n):
    pred_rgb = np.repeat(prediction[i, ..., None].astype(np.float64), 3, axis=-1)
    pred_rgb[error_boundaries(prediction[i], truth[i], line_width)] = ERROR_COLOUR
    panels = (images[i], np.repeat(truth[i, ..., None].astype(np.float64), 3, axis=-1), pred_rgb)
    for j, panel in enumerate(panels):
      ax = axes[i, j]
      ax.imshow(panel, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
    label = f"Dice {_dice(prediction[i], truth[i]):.3f}"
    axes[i, 0].set_ylabel(label if ids is None else f"{ids[i]}\n{label}", fontsize=8)
  for j, title in enumerate(("Image", "Ground truth", "Prediction (errors in red)")):
    axes[0, j].set_title(title, fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  return path


@dataclasses.dataclass(frozen=True)
class ModelPoint:
  """One model on the efficiency plot. ``gflops`` follows the paper's
  convention (multiply-accumulates counted by thop, i.e. GMACs)."""
  label: str
  params_m: float
  gflops: float
  miou: float
  miou_std: Optional[float] = None
  source: str = ""
  published: bool = False


def _optional_float(row, key):
  value = (row.get(key) or "").strip()
  return float(value) if value else None


def read_published_points(path: str = PUBLISHED_RESULTS, dataset: str = "isic/2017") -> List[ModelPoint]:
  """The published reference points for ``dataset`` that have all three
  values; rows with an absent value (an empty cell: not given in the cited
  source) are left out rather than guessed."""
  points = []
  with open(path, newline="") as f:
    for row in csv.DictReader(f):
      if row["dataset"] != dataset:
        continue
      params, gflops, miou = (_optional_float(row, k) for k in ("params_m", "gflops", "miou"))
      if None in (params, gflops, miou):
        continue
      points.append(ModelPoint(row["model"], params, gflops, miou, source=row["source"], published=True))
  return points


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def run_workdirs(path: str) -> List[str]:
  """The training workdirs under ``path``: ``path`` itself if it holds a
  results.json, else its sub-directories that do (e.g. the seeds of a
  repeated run), sorted."""
  if os.path.isfile(os.path.join(path, "results.json")):
    return [path]
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path} is not a directory")
  runs = sorted(os.path.join(path, d) for d in os.listdir(path)
                if os.path.isfile(os.path.join(path, d, "results.json")))
  if not runs:
    raise FileNotFoundError(f"{path} holds no results.json, and no sub-directory does: expected a finished "
                            f"training workdir or a directory of them")
  return runs


def model_cost(name: str, overrides: Optional[dict] = None, image_size: int = 256) -> Tuple[float, float]:
  """(parameters in M, GFLOPs in the paper's convention, i.e. GMACs) of a
  registered model at image_size x image_size."""
  import jax
  import jax.numpy as jnp
  from aulunet_jax import flops
  from aulunet_jax.models import build_model
  model = build_model(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in (overrides or {}).items()})
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, image_size, image_size, 3)),
                                                train=False))
  cost = flops.count_flops(model, variables, (image_size, image_size, 3))
  return cost["params"] / 1e6, cost["gmacs"]


def read_results_table(path: str) -> Tuple[float, Optional[float], int]:
  """(mean, std, number of runs) of the test mIoU, in %, from a repeated-runs
  results.csv (``runs.write_summary``: a row per run, then 'mean' and 'std'
  rows, metrics as fractions)."""
  with open(path, newline="") as f:
    rows = {row["run"]: row for row in csv.DictReader(f)}
  if "mean" not in rows or "std" not in rows or "miou" not in rows["mean"]:
    raise ValueError(f"{path} is not a repeated-runs results table (expected columns run, ..., miou and the rows "
                     f"'mean' and 'std')")
  n = len(rows) - 2
  return 100 * float(rows["mean"]["miou"]), (100 * float(rows["std"]["miou"]) if n > 1 else None), n


def read_runs(path: str, label: Optional[str] = None, image_size: int = 256) -> Tuple[ModelPoint, str]:
  """(point, dataset) from repeated runs of one model.

  ``path`` is a repeated-runs results.csv (its mean and std of the test
  mIoU), or a directory: a training workdir or a directory of them (see
  ``run_workdirs``), whose test mIoUs give the mean and the sample standard
  deviation (ddof=1). The model, its settings and the dataset come from the
  runs' config.json (beside the table, for a table), and all runs must share
  them; parameters and GFLOPs are counted from the model (``model_cost``).
  """
  table = path if os.path.isfile(path) else None
  runs = run_workdirs(os.path.dirname(os.path.abspath(path)) if table else path)
  keys = []
  mious = []
  for run in runs:
    config = _read_json(os.path.join(run, "config.json"))
    results = _read_json(os.path.join(run, "results.json"))
    keys.append((config["model"], json.dumps(config.get("model_overrides") or {}, sort_keys=True),
                 config["dataset"], results.get("split", config.get("test_split"))))
    mious.append(100.0 * float(results["miou"]))
  if len(set(keys)) > 1:
    described = "; ".join(f"{run}: model {k[0]} {k[1]}, {k[2]} {k[3]}" for run, k in zip(runs, keys))
    raise ValueError(f"the runs of {path} are not repeats of one setting: {described}")
  if table:
    mean, std, n = read_results_table(table)
  else:
    mean, std, n = float(np.mean(mious)), (float(np.std(mious, ddof=1)) if len(mious) > 1 else None), len(mious)
  name, overrides, dataset, _ = keys[0]
  params_m, gflops = model_cost(name, json.loads(overrides), image_size)
  suffix = f" (n={n})" if n > 1 else ""
  return ModelPoint(label or f"{name}{suffix}", params_m, gflops, mean, std, source=path), dataset


def save_params_vs_miou(points: Iterable[ModelPoint], path: str, title: str = "") -> str:
  """Writes the Figure 2 plot to ``path``: parameters (M, log scale) on x,
  mIoU (%) on y with the standard deviation of repeated runs as error bars,
  colour = GFLOPs (log scale). Published points are drawn as stars."""
  points = list(points)
  if not points:
    raise ValueError("save_params_vs_miou needs at least one point")
  for p in points:
    if not (p.params_m > 0 and p.gflops > 0):
      raise ValueError(f"point {p.label!r} needs positive params and GFLOPs (log scales), got {p}")
  gflops = [p.gflops for p in points]
  lo, hi = min(gflops), max(gflops)
  norm = mcolors.LogNorm(vmin=lo / 1.5 if lo == hi else lo, vmax=hi * 1.5 if lo == hi else hi)

  fig = Figure(figsize=(6.4, 4.4), dpi=150)
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  scatter = None
  for published, marker, size in ((False, "o", 60), (True, "*", 160)):
    group = [p for p in points if p.published == published]
    if not group:
      continue
    x = [p.params_m for p in group]
    y = [p.miou for p in group]
    yerr = [p.miou_std or 0.0 for p in group]
    if any(yerr):
      ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor="0.4", elinewidth=1, capsize=3, zorder=1)
    scatter = ax.scatter(x, y, c=[p.gflops for p in group], cmap="viridis", norm=norm, marker=marker, s=size,
                         edgecolors="black", linewidths=0.5, zorder=2,
                         label="published" if published else "measured")
    for p in group:
      ax.annotate(p.label, (p.params_m, p.miou), textcoords="offset points", xytext=(6, 4), fontsize=7)
  ax.set_xscale("log")
  ax.set_xlabel("Parameters (M)")
  ax.set_ylabel("mIoU (%)")
  ax.grid(True, which="both", alpha=0.3)
  if title:
    ax.set_title(title)
  if len({p.published for p in points}) > 1:
    ax.legend(fontsize=8, loc="lower right")
  fig.colorbar(scatter, ax=ax, label="GFLOPs")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  return path
