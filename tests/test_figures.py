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


def _fake_run(workdir, miou, model="aulunet_v3", overrides=None, dataset="isic/2017"):
  """A finished run's files as training writes them: config.json and results.json (fractions)."""
  import json
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"model": model, "model_overrides": overrides or {}, "dataset": dataset, "test_split": "test"}, f)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"miou": miou, "dsc": 0.9, "accuracy": 0.9, "sensitivity": 0.9, "specificity": 0.9, "split": "test",
               "checkpoint": os.path.join(workdir, "checkpoints", "best"), "epoch": 3}, f)


def test_repeated_runs_become_one_point_with_mean_and_std(tmp_path):
  for seed, miou in enumerate((0.80, 0.82, 0.84)):
    _fake_run(str(tmp_path / "v3" / f"seed_{seed}"), miou)
  point, dataset = figures.read_runs(str(tmp_path / "v3"))
  assert dataset == "isic/2017" and point.label == "aulunet_v3 (n=3)"
  assert point.miou == pytest.approx(82.0) and point.miou_std == pytest.approx(2.0)  # sample std, ddof=1
  # The repeated-runs table training writes beside the seeds gives the same point.
  from aulunet_jax import runs
  runs.write_summary(str(tmp_path / "v3"), [0, 1, 2], [{"miou": m, "dsc": 0.9, "accuracy": 0.9, "sensitivity": 0.9,
                                                        "specificity": 0.9} for m in (0.80, 0.82, 0.84)])
  from_table, _ = figures.read_runs(str(tmp_path / "v3" / "results.csv"))
  assert from_table.miou == pytest.approx(82.0) and from_table.miou_std == pytest.approx(2.0)
  assert (from_table.label, from_table.params_m) == (point.label, point.params_m)
  assert point.params_m == pytest.approx(0.028636)
  assert 0.06 < point.gflops < 0.08  # paper: 0.069
  _fake_run(str(tmp_path / "single"), 0.7, model="aulunet_no_rgf")
  single, _ = figures.read_runs(str(tmp_path / "single"), label="no RGF")
  assert (single.label, single.miou, single.miou_std) == ("no RGF", 70.0, None)
  assert single.params_m == pytest.approx(0.025036)
  _fake_run(str(tmp_path / "v3" / "seed_9"), 0.8, overrides={"use_lsg": False})
  with pytest.raises(ValueError, match="not repeats of one setting"):
    figures.read_runs(str(tmp_path / "v3"))
  os.makedirs(tmp_path / "unfinished" / "seed0")
  with pytest.raises(FileNotFoundError, match="holds no results.json"):
    figures.read_runs(str(tmp_path / "unfinished"))


def test_params_vs_miou_command(tmp_path):
  for seed, miou in enumerate((0.80, 0.83)):
    _fake_run(str(tmp_path / "v3" / f"seed_{seed}"), miou)
  _fake_run(str(tmp_path / "base"), 0.75, model="aulunet_base")
  out = str(tmp_path / "fig2.png")
  proc = subprocess.run([sys.executable, "-m", "launch.figures", "--figure=params_vs_miou",
                         f"--runs={tmp_path / 'v3'},{tmp_path / 'base'}", "--labels=AULUNet (ours),base",
                         f"--output={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "AULUNet (ours): 0.0286 M parameters" in proc.stdout and "mIoU 81.50 ± 2.12 %" in proc.stdout
  assert "AULUNet (published): 0.029 M, 0.069 GFLOPs, mIoU 85.32 %" in proc.stdout
  assert Image.open(out).size[0] > 500
