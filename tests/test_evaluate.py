"""Evaluation under the paper's and the ISIC challenge's protocols, on a
small synthetic dataset and on a fake ISIC 2017 layout built from archives."""

import csv
import json
import os
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import aulunet_jax
from aulunet_jax import checkpoints, evaluate, input_pipeline, preprocessing
from datasets.isic import dummy_data_generation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64
SYNTHETIC = {"name": "synthetic_64", "source": "synthetic", "image_size": SIZE, "synthetic_examples": [4, 3, 6]}
FAKE_2017 = {"name": "2017_64", "source": "2017", "image_size": SIZE}


@pytest.fixture(scope="module")
def model_and_variables(data):
  """A fresh AULUNet whose head is shifted so that it calls about half of the synthetic test pixels lesion."""
  model = aulunet_jax.AULUNet()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3)), train=False)
  params = dict(variables["params"])
  params["head"] = {**params["head"], "kernel": params["head"]["kernel"] * 20}
  source = input_pipeline.dataset_source("isic/synthetic_64", "test", data[0])
  images = preprocessing.normalize_image(np.stack([source[i]["image"] for i in range(len(source))]))
  probs = np.asarray(model.apply({**variables, "params": params}, images, train=False), np.float64)
  median_logit = np.median(np.log(probs) - np.log1p(-probs))
  params["head"]["bias"] = params["head"]["bias"] - median_logit
  return model, {**variables, "params": params}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """(data_dir, manual_dir, ids of the official training archive) with isic/synthetic_64 and isic/2017_64 built."""
  root = tmp_path_factory.mktemp("data")
  data_dir, manual_dir = str(root / "tfds"), str(root / "manual")
  input_pipeline.build_synthetic_if_missing(data_dir, SYNTHETIC)
  ids = dummy_data_generation.write_fake_archives(manual_dir, "2017", {"official_train": 16}, max_side=40)
  build = [sys.executable, "-m", "tensorflow_datasets.scripts.cli.main", "build",
           os.path.join(ROOT, "datasets", "isic"),
           f"--config={json.dumps(FAKE_2017)}", f"--manual_dir={manual_dir}", f"--data_dir={data_dir}"]
  proc = subprocess.run(build, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return data_dir, manual_dir, ids["official_train"]


def test_paper_protocol_is_one_confusion_matrix_over_the_split(model_and_variables, data):
  model, variables = model_and_variables
  result = evaluate.evaluate(model, variables, "isic/synthetic_64", "test", data[0], batch_size=4)
  source = input_pipeline.dataset_source("isic/synthetic_64", "test", data[0])
  images = np.stack([source[i]["image"] for i in range(len(source))])
  masks = np.stack([source[i]["mask"] for i in range(len(source))])[..., 0]
  probs = np.asarray(model.apply(variables, preprocessing.normalize_image(images), train=False))[..., 0]
  pred, true = probs >= 0.5, masks >= 128
  tp, fp, fn, tn = [int(np.sum(a & b)) for a, b in ((pred, true), (pred, ~true), (~pred, true), (~pred, ~true))]
  assert result.num_images == 6 and 0 < tp and 0 < fp + fn
  expected = {"miou": tp / (tp + fp + fn), "dsc": 2 * tp / (2 * tp + fp + fn), "accuracy": (tp + tn) / pred.size,
              "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp)}
  assert result.metrics == pytest.approx(expected, abs=1e-12)
  # Per-image rows add up to the split's matrix.
  assert sum(r["tp"] for r in result.per_image) == tp and sum(r["tn"] for r in result.per_image) == tn


def test_isic_protocol_on_synthetic_data_needs_no_manual_dir(model_and_variables, data):
  # The synthetic masks' native sizes are larger than the stored 64x64; the generator draws them again.
  result = evaluate.evaluate(*model_and_variables, "isic/synthetic_64", "test", data[0], protocol="isic_challenge")
  source = input_pipeline.dataset_source("isic/synthetic_64", "test", data[0])
  assert [(r["height"], r["width"]) for r in result.per_image] == [
      (int(source[i]["original_height"]), int(source[i]["original_width"])) for i in range(len(source))]
  assert all(r["width"] > SIZE for r in result.per_image)
  assert result.metrics["dice"] == pytest.approx(np.mean([r["dice"] for r in result.per_image]))
  assert 0 < result.metrics["dice"] < 1


def test_isic_protocol_matches_the_official_scorer(model_and_variables, data, tmp_path):
  data_dir, manual_dir, _ = data
  masks_dir = str(tmp_path / "submission")
  result = evaluate.evaluate(*model_and_variables, "isic/2017_64", "test", data_dir, protocol="isic_challenge",
                             manual_dir=manual_dir, masks_dir=masks_dir)
  assert result.num_images == 5  # 16 images: 10 train, 1 validation, 5 test
  truth_dir = tmp_path / "truth"
  truth_dir.mkdir()
  with zipfile.ZipFile(os.path.join(manual_dir, "ISIC-2017_Training_Part1_GroundTruth.zip")) as archive:
    for row in result.per_image:
      name = f"{row['image_id']}_segmentation.png"
      truth = np.asarray(Image.open(archive.open(f"ISIC-2017_Training_Part1_GroundTruth/{name}")))
      (truth_dir / name).write_bytes(archive.read(f"ISIC-2017_Training_Part1_GroundTruth/{name}"))
      predicted = np.asarray(Image.open(os.path.join(masks_dir, name)))
      # Predictions come back at the original size, which is not the stored 64x64.
      assert predicted.shape == truth.shape == (row["height"], row["width"]) != (SIZE, SIZE)
      assert set(np.unique(predicted)) <= {0, 255}
  assert 0 < result.metrics["jaccard"] < 1
  import isic_challenge_scoring as scoring  # in the test extra: this comparison never skips
  official = scoring.SegmentationScore.from_dir(truth_dir, tmp_path / "submission").macro_average
  for name in evaluate.PER_IMAGE_NAMES:
    assert result.metrics[name] == pytest.approx(float(official[name]), abs=1e-12), name


def test_isic_protocol_names_missing_or_wrong_ground_truth(model_and_variables, data, tmp_path):
  data_dir, _, ids = data
  with pytest.raises(ValueError, match="needs the original masks: pass manual_dir"):
    evaluate.evaluate(*model_and_variables, "isic/2017_64", "test", data_dir, protocol="isic_challenge")
  other = str(tmp_path / "other")  # the same ids with other masks
  dummy_data_generation.write_fake_archives(other, "2017", {"official_train": 16}, seed=1, max_side=40,
                                            ids={"official_train": ids})
  with pytest.raises(ValueError, match="is not the mask that isic/2017_64 was prepared from"):
    evaluate.evaluate(*model_and_variables, "isic/2017_64", "test", data_dir, protocol="isic_challenge",
                      manual_dir=other)
  with pytest.raises(FileNotFoundError, match="ISIC-2017_Training_Part1_GroundTruth"):
    evaluate.evaluate(*model_and_variables, "isic/2017_64", "test", data_dir, protocol="isic_challenge",
                      manual_dir=str(tmp_path))
  with pytest.raises(ValueError, match="protocol must be one of"):
    evaluate.evaluate(*model_and_variables, "isic/2017_64", "test", data_dir, protocol="mean")


def test_evaluate_command(model_and_variables, data, tmp_path):
  data_dir, manual_dir, _ = data
  ckpt = checkpoints.save_inference_checkpoint(str(tmp_path / "ckpt"), model_and_variables[1],
                                               checkpoints.model_spec("aulunet_v3"))
  per_image = str(tmp_path / "per_image.csv")
  cmd = [sys.executable, "-m", "launch.evaluate", f"--checkpoint={ckpt}", "--dataset=isic/2017_64", "--split=test",
         f"--data_dir={data_dir}", "--protocol=isic_challenge", f"--manual_dir={manual_dir}",
         f"--per_image={per_image}", "--format=json"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  expected = evaluate.evaluate(*model_and_variables, "isic/2017_64", "test", data_dir, protocol="isic_challenge",
                               manual_dir=manual_dir)
  assert report["num_images"] == 5 and report["protocol"] == "isic_challenge"
  assert {k: report[k] for k in expected.metrics} == pytest.approx(expected.metrics, abs=1e-9)
  with open(per_image) as f:
    rows = list(csv.DictReader(f))
  assert [r["image_id"] for r in rows] == [r["image_id"] for r in expected.per_image]
  table = subprocess.run(cmd[:5] + ["--split=validation", cmd[6]], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
  assert table.returncode == 0, table.stderr[-3000:]
  assert "| mIoU (%) | DSC (%) | accuracy (%) | sensitivity (%) | specificity (%) |" in table.stdout
  both = subprocess.run(cmd[:4] + [f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert both.returncode != 0 and "exactly one of --workdir and --checkpoint" in both.stderr


def test_figure3_command_for_a_split(model_and_variables, data, tmp_path):
  ckpt = checkpoints.save_inference_checkpoint(str(tmp_path / "ckpt"), model_and_variables[1],
                                               checkpoints.model_spec("aulunet_v3"))
  examples = evaluate.predict_examples(*model_and_variables, "isic/synthetic_64", "test", data[0], num_images=3)
  source = input_pipeline.dataset_source("isic/synthetic_64", "test", data[0])
  assert examples["image_id"] == [source[i]["image_id"].decode() for i in (0, 2, 5)]  # spread over the stored order
  assert examples["probs"].shape == examples["mask"].shape == (3, SIZE, SIZE)
  out = str(tmp_path / "fig3.png")
  proc = subprocess.run([sys.executable, "-m", "launch.figures", "--figure=qualitative", f"--checkpoint={ckpt}",
                         "--dataset=isic/synthetic_64", "--split=test", f"--data_dir={data[0]}",
                         "--image_ids=synthetic_test_00001,synthetic_test_00004", f"--output={out}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "synthetic_test_00001, synthetic_test_00004" in proc.stdout
  width, height = Image.open(out).size
  assert width > height  # two rows of three panels
  with pytest.raises(ValueError, match="has no image synthetic_test_99999"):
    evaluate.predict_examples(*model_and_variables, "isic/synthetic_64", "test", data[0],
                              image_ids=["synthetic_test_99999"])
