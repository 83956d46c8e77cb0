"""The isic TFDS builder on fake ISIC archives: splits, features, bad input, the tfds CLI."""

import io
import os
import subprocess
import sys
import zipfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from aulunet_jax import input_pipeline, preprocessing
from datasets.isic import dummy_data_generation as fake
from datasets.isic import isic_dataset_builder as isic
# The TFDS conformance tests of the builder folder run here too.
from datasets.isic.isic_dataset_builder_test import Isic2017Test, Isic2018Test, IsicSyntheticTest  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TFDS_CLI = os.path.join(os.path.dirname(sys.executable), "tfds")


def _build(manual_dir, data_dir, year, size=8, name=None):
  config = isic.IsicConfig(name=name or f"{year}_{size}", source=year, image_size=size)
  builder = isic.Builder(config=config, data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def _ids(data_dir, dataset, split):
  source = input_pipeline.dataset_source(dataset, split, str(data_dir))
  return [source[i]["image_id"].decode() for i in range(len(source))]


@pytest.mark.parametrize("year,n,sizes", [("2017", 2000, (1250, 150, 600)), ("2018", 2594, (1815, 259, 520))])
def test_paper_split_sizes_and_id_order(year, n, sizes):
  ids = [f"ISIC_{i:07d}" for i in np.random.default_rng(0).choice(10 ** 7, n, replace=False)]
  splits = isic.paper_splits(ids, year)
  assert tuple(len(splits[s]) for s in isic.PAPER_SPLITS) == sizes
  assert splits["train"] + splits["validation"] + splits["test"] == sorted(ids)


def test_other_counts_keep_the_proportions():
  assert [len(v) for v in isic.paper_splits([f"ISIC_{i:07d}" for i in range(40)], "2017").values()] == [25, 3, 12]
  assert [len(v) for v in isic.paper_splits([f"ISIC_{i:07d}" for i in range(40)], "2018").values()] == [28, 4, 8]


@pytest.mark.parametrize("year,n,form,sizes", [("2017", 2000, "zip", (1250, 150, 600)),
                                               ("2018", 2594, "folder", (1815, 259, 520))])
def test_full_size_archives_give_the_paper_splits(tmp_path, year, n, form, sizes):
  written = fake.write_fake_archives(tmp_path / "manual", year, {"official_train": n}, form, max_side=8,
                                     side_files=False)
  builder = _build(tmp_path / "manual", tmp_path / "data", year)
  counts = {name: split.num_examples for name, split in builder.info.splits.items()}
  assert counts == dict(zip(isic.PAPER_SPLITS, sizes), official_train=n)
  ordered = written["official_train"]
  assert sorted(_ids(tmp_path / "data", f"isic/{year}_8", "validation")) == ordered[sizes[0]:sizes[0] + sizes[1]]


@pytest.fixture(scope="module")
def small_2017(tmp_path_factory):
  root = tmp_path_factory.mktemp("isic2017")
  written = fake.write_fake_archives(root / "manual", "2017",
                                     {"official_train": 16, "official_validation": 3, "official_test": 4}, "zip",
                                     max_side=40)
  _build(root / "manual", root / "data", "2017", size=16)
  return root, written


def test_splits_follow_isic_id_order(small_2017):
  root, written = small_2017
  train = written["official_train"]
  expected = {"train": train[:10], "validation": train[10:11], "test": train[11:],
              "official_train": train, "official_validation": written["official_validation"],
              "official_test": written["official_test"]}
  for split, ids in expected.items():
    assert sorted(_ids(root / "data", "isic/2017_16", split)) == ids, split


def test_examples_are_the_reference_resize_of_the_archive_files(small_2017):
  root, _ = small_2017
  source = input_pipeline.dataset_source("isic/2017_16", "official_train", str(root / "data"))
  with zipfile.ZipFile(root / "manual" / "ISIC-2017_Training_Data.zip") as images, \
       zipfile.ZipFile(root / "manual" / "ISIC-2017_Training_Part1_GroundTruth.zip") as masks:
    for i in range(len(source)):
      example = source[i]
      image_id = example["image_id"].decode()
      image = np.asarray(Image.open(io.BytesIO(images.read(f"ISIC-2017_Training_Data/{image_id}.jpg"))))
      mask = np.asarray(Image.open(io.BytesIO(masks.read(
          f"ISIC-2017_Training_Part1_GroundTruth/{image_id}_segmentation.png"))))
      np.testing.assert_array_equal(example["image"], preprocessing.resize_image(image, 16))
      np.testing.assert_array_equal(example["mask"], preprocessing.resize_mask(mask, 16))
      assert (example["original_height"], example["original_width"]) == image.shape[:2]


def _break(tmp_path, how):
  """Fake 2018 folders with one defect; returns the text the error must contain."""
  manual = tmp_path / "manual"
  written = fake.write_fake_archives(manual, "2018", {"official_train": 12, "official_validation": 2}, "folder")
  victim = written["official_train"][2]
  images, masks = manual / "ISIC2018_Task1-2_Training_Input", manual / "ISIC2018_Task1_Training_GroundTruth"
  if how == "image without mask":
    (masks / f"{victim}_segmentation.png").unlink()
    return f"{victim}.jpg has no mask {victim}_segmentation.png"
  if how == "mask without image":
    (images / f"{victim}.jpg").unlink()
    return f"{victim}_segmentation.png has no image {victim}.jpg"
  if how == "truncated jpeg":
    data = (images / f"{victim}.jpg").read_bytes()
    (images / f"{victim}.jpg").write_bytes(data[:len(data) // 2])
    return f"Cannot read {victim}.jpg"
  if how == "size mismatch":
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(masks / f"{victim}_segmentation.png")
    return f"{victim}_segmentation.png .*is 7x5 but its image {victim}.jpg"
  if how == "missing required archive":
    for f in images.iterdir():
      f.unlink()
    images.rmdir()
    return "Missing archive ISIC2018_Task1-2_Training_Input"
  if how == "half an optional pair":
    folder = manual / "ISIC2018_Task1_Validation_GroundTruth"
    for f in folder.iterdir():
      f.unlink()
    folder.rmdir()
    return "Missing archive ISIC2018_Task1_Validation_GroundTruth"
  if how == "unexpected file":
    (images / f"{victim}.png").write_bytes(b"")
    return f"unexpected file {victim}.png"
  if how == "too few images":
    for image_id in written["official_train"][1:]:
      (images / f"{image_id}.jpg").unlink()
      (masks / f"{image_id}_segmentation.png").unlink()
    return "holds only 1 image pairs: too few"
  if how == "corrupt zip":
    (manual / "ISIC2018_Task1_Training_GroundTruth.zip").write_bytes(b"not a zip")
    return "ISIC2018_Task1_Training_GroundTruth.zip is not a readable zip"
  raise ValueError(how)


@pytest.mark.parametrize("how", ["image without mask", "mask without image", "truncated jpeg", "size mismatch",
                                 "missing required archive", "half an optional pair", "unexpected file",
                                 "too few images", "corrupt zip"])
def test_bad_input_is_a_clear_error(tmp_path, how):
  message = _break(tmp_path, how)
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    _build(tmp_path / "manual", tmp_path / "data", "2018")
  assert not (tmp_path / "data" / "isic" / "2018_8" / "1.0.0" / "dataset_info.json").exists()


def test_examples_written_are_checked_against_pairs_found(tmp_path, monkeypatch):
  fake.write_fake_archives(tmp_path / "manual", "2018", {"official_train": 12}, "folder")
  generate = isic.Builder._generate_examples

  def lose_one(self, make_example, items):
    items = list(items)
    yield from generate(self, make_example, items[1:] if len(items) > 1 else items)
  monkeypatch.setattr(isic.Builder, "_generate_examples", lose_one)
  with pytest.raises(RuntimeError, match="wrote .* examples per split, but found"):
    _build(tmp_path / "manual", tmp_path / "data", "2018")


@pytest.mark.parametrize("cwd,target", [("datasets", "isic"), (".", "datasets/isic")])
def test_tfds_cli_builds_from_both_folders(tmp_path, cwd, target):
  fake.write_fake_archives(tmp_path / "manual", "2018", {"official_train": 10, "official_test": 2}, "zip")
  config = '{"name": "2018_cli", "source": "2018", "image_size": 12}'
  result = subprocess.run([TFDS_CLI, "build", target, f"--config={config}", f"--manual_dir={tmp_path / 'manual'}",
                           f"--data_dir={tmp_path / 'data'}"], cwd=os.path.join(REPO, cwd), capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  info = tfds.builder_from_directory(input_pipeline.dataset_dir("isic/2018_cli", str(tmp_path / "data"))).info
  assert info.file_format.value == "array_record"
  assert {k: v.num_examples for k, v in info.splits.items()} == {"train": 7, "validation": 1, "test": 2,
                                                                  "official_train": 10, "official_test": 2}
