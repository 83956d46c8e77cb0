"""Segmentation metrics from pixel confusion counts.

The paper's protocol (the reference's val/test loop): predictions and ground
truth are binarised (prediction >= threshold, mask >= 0.5), one confusion
matrix is accumulated over all pixels of the split, and

  mIoU        = TP / (TP + FP + FN)   (the lesion-class IoU, which the paper
                                       calls mIoU)
  DSC         = 2 TP / (2 TP + FP + FN)
  accuracy    = (TP + TN) / (TP + FP + FN + TN)
  sensitivity = TP / (TP + FN)
  specificity = TN / (TN + FP)

each 0 when its denominator is 0, as the reference's guards make it.

The ISIC challenge scores each image on its own and averages over images
(macro average); its official scorer counts an ill-defined ratio (e.g. Dice
of an empty prediction on an empty mask) as 1, a perfect answer, and its 2018
task-1 headline figure is the thresholded Jaccard: the per-image Jaccard,
counted as 0 when below 0.65. ``per_image_scores`` follows that scorer.

Counts are (..., 4) arrays ordered [TP, FP, FN, TN]. Inside jit they are
float32 per image, which is exact up to 2^24 pixels per image; sums over a
whole split belong on the host in float64 (``np.sum(counts, axis=0,
dtype=np.float64)``), where float32 would round beyond 16.7 M pixels.
"""

from typing import Dict

import jax.numpy as jnp
import numpy as np

NAMES = ("miou", "dsc", "accuracy", "sensitivity", "specificity")


def per_image_confusion(probs, masks, threshold: float = 0.5):
  """[TP, FP, FN, TN] of each image: (N, ...) -> (N, 4) float32.

  A pixel is predicted positive when its probability is >= ``threshold``
  and is positive in the ground truth when its mask value is >= 0.5.
  """
  pred = probs.reshape(probs.shape[0], -1) >= threshold
  true = masks.reshape(masks.shape[0], -1) >= 0.5
  count = lambda a: jnp.sum(a, axis=1, dtype=jnp.int32)
  counts = jnp.stack([count(pred & true), count(pred & ~true), count(~pred & true), count(~pred & ~true)], axis=1)
  return counts.astype(jnp.float32)


def confusion_counts(probs, masks, threshold: float = 0.5, valid=None):
  """[TP, FP, FN, TN] over all pixels of the batch: (4,) float32.

  ``valid`` (N,) bool leaves out padding examples of a batch.
  """
  counts = per_image_confusion(probs, masks, threshold)
  if valid is not None:
    counts = jnp.where(valid[:, None], counts, 0.0)
  return jnp.sum(counts, axis=0)


def _ratio(num, den, when_zero):
  num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
  return np.where(den > 0, num / np.where(den > 0, den, 1.0), when_zero)


def summarize(counts) -> Dict[str, float]:
  """The paper's metrics (fractions) from one confusion matrix [TP, FP, FN, TN]."""
  tp, fp, fn, tn = np.asarray(counts, np.float64)
  return {
      "miou": float(_ratio(tp, tp + fp + fn, 0.0)),
      "dsc": float(_ratio(2 * tp, 2 * tp + fp + fn, 0.0)),
      "accuracy": float(_ratio(tp + tn, tp + fp + fn + tn, 0.0)),
      "sensitivity": float(_ratio(tp, tp + fn, 0.0)),
      "specificity": float(_ratio(tn, tn + fp, 0.0)),
  }


def per_image_scores(counts, jaccard_threshold: float = 0.65) -> Dict[str, np.ndarray]:
  """Per-image scores as the ISIC challenge's scorer computes them.

  Args:
    counts: (N, 4) per-image [TP, FP, FN, TN].
  Returns:
    arrays (N,) of accuracy, sensitivity, specificity, jaccard,
    threshold_jaccard (0 below ``jaccard_threshold``) and dice.
  """
  tp, fp, fn, tn = np.moveaxis(np.asarray(counts, np.float64), -1, 0)
  jaccard = _ratio(tp, tp + fp + fn, 1.0)
  return {
      "accuracy": _ratio(tp + tn, tp + fp + fn + tn, 1.0),
      "sensitivity": _ratio(tp, tp + fn, 1.0),
      "specificity": _ratio(tn, tn + fp, 1.0),
      "jaccard": jaccard,
      "threshold_jaccard": np.where(jaccard >= jaccard_threshold, jaccard, 0.0),
      "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
  }


def mean_per_image_scores(counts, jaccard_threshold: float = 0.65) -> Dict[str, float]:
  """Macro averages of ``per_image_scores`` over the images (the ISIC challenge's figures)."""
  return {k: float(np.mean(v)) for k, v in per_image_scores(counts, jaccard_threshold).items()}
