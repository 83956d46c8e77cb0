import json
import os

import numpy as np

from aulunet_jax import writers


def test_metrics_lines_are_strict_json_with_unmeasured_numbers_as_null(tmp_path):
  writer = writers.MetricWriter(str(tmp_path), enabled=True)
  writer.write(1, "train", {"loss": np.float32(0.5), "images_per_second": float("nan"),
                            "confusion": np.array([1.0, np.inf, 3.0])})
  writer.mark_resumed(1)
  writer.write(1, "train", {"loss": 0.25, "images_per_second": 100.0})
  writer.close()

  def strict(constant):
    raise ValueError(f"{constant} is not JSON")

  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    lines = [json.loads(line, parse_constant=strict) for line in f]
  assert lines[0]["images_per_second"] is None and lines[0]["confusion"] == [1.0, None, 3.0]
  assert lines[0]["loss"] == 0.5
  assert lines[1] == {"event": "resumed", "epoch": 1, "time": lines[1]["time"]}
  # Readers take the last record of each (epoch, split).
  [record] = writers.read_metrics(str(tmp_path))
  assert record["loss"] == 0.25 and record["images_per_second"] == 100.0
