"""launch.benchmark end to end, at a toy size (it measures; nothing here
asserts on speed)."""

import json
import subprocess
import sys

import pytest

import train_helpers


def test_benchmark_times_both_sides_and_reports_json():
  out = subprocess.run([sys.executable, "-m", "launch.benchmark", "--batch_size=2", "--image_size=32", "--rounds=2",
                        "--steps_per_round=1", "--format=json"], cwd=train_helpers.ROOT, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  for key in ("jax_train_ips", "torch_train_ips", "jax_infer_ips", "torch_infer_ips", "jax_latency_ms",
              "torch_latency_ms", "train_speedup", "infer_speedup", "jax_train_compile_s", "memory_bandwidth_gbs",
              "jax_train_bytes_per_step", "jax_infer_bytes_per_batch"):
    assert result[key] > 0, key
  assert result["train_speedup"] == pytest.approx(result["jax_train_ips"] / result["torch_train_ips"])
  assert result["infer_speedup"] == pytest.approx(result["jax_infer_ips"] / result["torch_infer_ips"])
  assert result["latency_ratio"] == pytest.approx(result["jax_latency_ms"] / result["torch_latency_ms"])
  probes = result["memory_bandwidth_probes_gbs"]
  assert len(probes) == 4 and result["memory_bandwidth_gbs"] == max(probes)
  assert result["infer_bandwidth_bound_ms"] == pytest.approx(
      1e3 * result["jax_infer_bytes_per_batch"] / (result["memory_bandwidth_gbs"] * 1e9))
  machine = result["machine"]
  assert machine["torch"].startswith("2.13.0") and machine["torch_threads"] == 2
  assert machine["jax_devices"] and machine["usable_cpus"] >= 1
