import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from aulunet_jax import figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _red_pixels(path):
  rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
  return (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)


def test_error_boundaries_outline_the_disagreement():
  truth = np.zeros((8, 8), bool)
  truth[2:6, 2:6] = True
  prediction = truth.copy()
  prediction[2:6, 2:7] = True  # one extra column of false positives
  boundary = figures.error_boundaries(prediction, truth)
  # A one-pixel-wide error region is all boundary; nothing else is.
  assert np.array_equal(boundary, prediction != truth)
  big = np.zeros((10, 10), bool)
  big[2:8, 2:8] = True
  boundary = figures.error_boundaries(big, np.zeros_like(big))
  assert boundary.sum() == 6 * 6 - 4 * 4 and not boundary[3:7, 3:7].any()
  assert not figures.error_boundaries(truth, truth).any()


def test_qualitative_panels_draw_red_only_where_the_prediction_is_wrong(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
  masks = np.zeros((2, 64, 64, 1), np.float32)
  masks[:, 16:48, 16:48] = 1
  # Green-free test images so that red in the output can only come from the error boundaries.
  images[..., 1] = images[..., 0]
  images[..., 2] = images[..., 0]
  exact = figures.save_qualitative_panels(images, masks, masks * 0.9, str(tmp_path / "exact.png"))
  assert not _red_pixels(exact).any()
  probs = masks.copy()
  probs[1, 16:48, 40:56] = 0.8  # row 2 overshoots to the right
  wrong = figures.save_qualitative_panels(images, masks, probs, str(tmp_path / "sub" / "wrong.png"),
                                          ids=["ISIC_0000000", "ISIC_0000001"])
  red = _red_pixels(wrong)
  assert red.any()
  rows, cols = np.nonzero(red)
  h, w = red.shape
  # Red lies in the second row of panels and in the prediction column.
  assert rows.min() > h * 0.45 and cols.min() > w * 0.6


def test_qualitative_panels_name_bad_inputs(tmp_path):
  images = np.zeros((2, 32, 32, 3))
  with pytest.raises(ValueError, match="probs must have shape"):
    figures.save_qualitative_panels(images, np.zeros((2, 32, 32)), np.zeros((2, 16, 16)), str(tmp_path / "x.png"))
  with pytest.raises(ValueError, match=r"masks must hold values in \[0, 1\]"):
    figures.save_qualitative_panels(images, np.full((2, 32, 32), 255.0), np.zeros((2, 32, 32)),
                                    str(tmp_path / "x.png"))
  with pytest.raises(ValueError, match="ids has 1 entries for 2 images"):
    figures.save_qualitative_panels(images, np.zeros((2, 32, 32)), np.zeros((2, 32, 32)), str(tmp_path / "x.png"),
                                    ids=["a"])


def test_published_points_cite_a_source_and_leave_absent_values_out():
  points = figures.read_published_points(dataset="isic/2017")
  assert [p.label for p in points] == ["AULUNet"]
  assert (points[0].params_m, points[0].gflops, points[0].miou) == (0.029, 0.069, 85.32)
  assert points[0].source and points[0].published
  assert figures.read_published_points(dataset="isic/2018")[0].miou == 82.44


def test_params_vs_miou_plot(tmp_path):
  points = [figures.ModelPoint("ours", 0.0286, 0.0706, 80.1, miou_std=0.7),
            figures.ModelPoint("unet", 7.763, 13.71, 78.0, miou_std=1.2)] + figures.read_published_points()
  path = figures.save_params_vs_miou(points, str(tmp_path / "fig2.png"), title="ISIC 2017")
  assert Image.open(path).size[0] > 500
  with pytest.raises(ValueError, match="positive params"):
    figures.save_params_vs_miou([figures.ModelPoint("bad", 0, 1, 50)], str(tmp_path / "bad.png"))
