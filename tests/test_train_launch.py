"""launch.train: bundled flagfiles, the unprepared-dataset message, and the
paper's ISIC 2017 flagfile on a fake ISIC 2017."""

import json
import os
import subprocess
import sys

import pytest

import train_helpers
from datasets.isic import dummy_data_generation


def test_bundled_flagfile_is_found_from_any_directory(tmp_path):
  empty = tmp_path / "no_data"
  proc = train_helpers.run(["-m", "launch.train", "--flagfile=isic2017.flags", f"--data_dir={empty}"], check=False,
                           cwd=tmp_path)
  assert proc.returncode == 1
  # The dataset is not prepared: the message gives the command that prepares it.
  assert f"tfds build datasets/isic --config=2017 --data_dir={empty} --manual_dir=" in proc.stderr
  # A file of that name in the working directory wins over the bundled one.
  (tmp_path / "isic2017.flags").write_text("--dataset=isic/2018\n--workdir=w\n")
  proc = train_helpers.run(["-m", "launch.train", "--flagfile=isic2017.flags", f"--data_dir={empty}"], check=False,
                           cwd=tmp_path)
  assert "tfds build datasets/isic --config=2018" in proc.stderr


def test_isic2017_flagfile_trains_one_epoch_on_a_fake_isic2017(tmp_path):
  dummy_data_generation.write_fake_archives(tmp_path / "manual", "2017", {"official_train": 40}, "zip", max_side=48)
  build = subprocess.run([sys.executable, "-m", "tensorflow_datasets.scripts.cli.main", "build", "datasets/isic",
                          "--config=2017", f"--manual_dir={tmp_path / 'manual'}", f"--data_dir={tmp_path / 'data'}"],
                         cwd=train_helpers.ROOT, capture_output=True, text=True)
  assert build.returncode == 0, build.stderr[-3000:]
  workdir = tmp_path / "run"
  train_helpers.run(["-m", "launch.train", "--flagfile=isic2017.flags", f"--data_dir={tmp_path / 'data'}",
                     "--epochs=1", f"--workdir={workdir}", "--progress_bar=false", "--num_figures=2"])
  results = json.load(open(workdir / "results.json"))
  assert (results["epoch"], results["split"], results["num_examples"]) == (1, "test", 12)  # 40 -> 25 / 3 / 12
  config = json.load(open(workdir / "config.json"))
  assert (config["dataset"], config["epochs"], config["learning_rate"], config["global_batch_size"]) == (
      "isic/2017", 1, 1e-3, 8)
