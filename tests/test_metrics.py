import jax
import numpy as np
import pytest

from aulunet_jax import metrics


def _images(pred_bits, true_bits):
  """Probabilities and masks (N, 1, P, 1) from 0/1 lists, with values near the thresholds."""
  probs = np.where(np.asarray(pred_bits, bool), 0.5, 0.4999).astype(np.float32)
  masks = np.where(np.asarray(true_bits, bool), 0.5, 0.49).astype(np.float32)
  return probs[:, None, :, None], masks[:, None, :, None]


def test_counts_of_a_hand_made_confusion_matrix():
  # Image 0: TP 2, FP 1, FN 1, TN 2. Image 1: TP 0, FP 0, FN 3, TN 3.
  probs, masks = _images([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
                         [[1, 1, 0, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
  per_image = np.asarray(jax.jit(metrics.per_image_confusion)(probs, masks))
  np.testing.assert_array_equal(per_image, [[2, 1, 1, 2], [0, 0, 3, 3]])
  np.testing.assert_array_equal(metrics.confusion_counts(probs, masks), [2, 1, 4, 5])
  np.testing.assert_array_equal(metrics.confusion_counts(probs, masks, valid=np.array([True, False])), [2, 1, 1, 2])
  # A higher threshold turns the 0.5 predictions negative.
  np.testing.assert_array_equal(metrics.confusion_counts(probs, masks, threshold=0.6), [0, 0, 6, 6])


def test_summarize_gives_the_paper_metrics():
  m = metrics.summarize([2, 1, 4, 5])  # TP, FP, FN, TN
  assert m["miou"] == pytest.approx(2 / 7)
  assert m["dsc"] == pytest.approx(4 / 9)
  assert m["accuracy"] == pytest.approx(7 / 12)
  assert m["sensitivity"] == pytest.approx(2 / 6)
  assert m["specificity"] == pytest.approx(5 / 6)
  # The reference's zero guards: an empty ground truth and prediction scores 0, not NaN.
  assert metrics.summarize([0, 0, 0, 10]) == {"miou": 0.0, "dsc": 0.0, "accuracy": 1.0, "sensitivity": 0.0,
                                              "specificity": 1.0}


def test_per_image_scores_follow_the_isic_scorer():
  counts = np.array([[2, 1, 1, 2],      # jaccard 0.5 -> thresholded 0
                     [9, 1, 0, 90],     # jaccard 0.9
                     [0, 0, 0, 100]])   # empty vs empty: 1 (a perfect answer)
  s = metrics.per_image_scores(counts)
  np.testing.assert_allclose(s["jaccard"], [0.5, 0.9, 1.0])
  np.testing.assert_allclose(s["threshold_jaccard"], [0.0, 0.9, 1.0])
  np.testing.assert_allclose(s["dice"], [4 / 6, 18 / 19, 1.0])
  np.testing.assert_allclose(s["sensitivity"], [2 / 3, 1.0, 1.0])
  np.testing.assert_allclose(s["specificity"], [2 / 3, 90 / 91, 1.0])
  means = metrics.mean_per_image_scores(counts)
  assert means["threshold_jaccard"] == pytest.approx(1.9 / 3)
  assert means["dice"] == pytest.approx((4 / 6 + 18 / 19 + 1) / 3)


def test_split_sums_stay_exact_beyond_float32():
  # 600 images of 256x256 (the ISIC 2017 test split): 39 M pixels, beyond float32's 2^24.
  per_image = np.tile(np.array([[30001, 7, 5, 35523]], np.float32), (600, 1))
  total = np.sum(per_image, axis=0, dtype=np.float64)
  assert total.tolist() == [30001 * 600, 7 * 600, 5 * 600, 35523 * 600]
