import csv

import numpy as np
import pytest

from aulunet_jax import metrics, runs


def _result(x):
  return {name: x + i / 100 for i, name in enumerate(metrics.NAMES)}


def test_summary_tables_give_mean_and_sample_std(tmp_path):
  results = [_result(0.80), _result(0.84), _result(0.85)]
  table = runs.write_summary(tmp_path, [0, 1, 2], results)
  dsc = [r["dsc"] for r in results]
  mean, std = np.mean(dsc), np.std(dsc, ddof=1)
  assert f"{100 * mean:.2f} ± {100 * std:.2f}" in table and table == (tmp_path / "results.md").read_text()
  rows = list(csv.DictReader(open(tmp_path / "results.csv")))
  assert [r["run"] for r in rows] == ["seed_0", "seed_1", "seed_2", "mean", "std"]
  assert float(rows[3]["dsc"]) == pytest.approx(mean) and float(rows[4]["dsc"]) == pytest.approx(std)
  assert float(rows[1]["miou"]) == results[1]["miou"]


def test_one_run_has_zero_std_and_no_runs_is_an_error():
  assert runs.mean_and_std([_result(0.5)])["std"] == dict.fromkeys(metrics.NAMES, 0.0)
  with pytest.raises(ValueError, match="no runs"):
    runs.mean_and_std([])
