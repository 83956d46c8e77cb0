"""Repeated runs: the paper reports the mean and standard deviation of five
independent runs. ``train_repeated`` trains seeds s, s+1, ... into
``<workdir>/seed_<s>/`` and writes the table of their test results.

  <workdir>/results.md    Markdown: one row per run, then mean ± std (in %)
  <workdir>/results.csv   the same numbers as fractions; rows run/seed, then
                          'mean' and 'std'

The standard deviation is the sample one (ddof = 1), as "± std over runs"
usually means; with one run it is 0.
"""

import csv
import dataclasses
import os
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from aulunet_jax import metrics, train

HEADERS = {"miou": "mIoU", "dsc": "DSC", "accuracy": "Acc", "sensitivity": "Sen", "specificity": "Spe"}


def run_workdir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f"seed_{seed}")


def mean_and_std(results: Sequence[Mapping[str, float]]) -> Dict[str, Dict[str, float]]:
  """{'mean': {metric: ...}, 'std': {metric: ...}} over runs."""
  if not results:
    raise ValueError("no runs to summarise")
  values = np.array([[r[k] for k in metrics.NAMES] for r in results], np.float64)
  std = values.std(axis=0, ddof=1) if len(results) > 1 else np.zeros(len(metrics.NAMES))
  return {"mean": dict(zip(metrics.NAMES, values.mean(axis=0).tolist())), "std": dict(zip(metrics.NAMES, std.tolist()))}


def markdown_table(seeds: Sequence[int], results: Sequence[Mapping[str, float]]) -> str:
  stats = mean_and_std(results)
  lines = ["| run | " + " | ".join(f"{HEADERS[k]} (%)" for k in metrics.NAMES) + " |",
           "|---|" + "---:|" * len(metrics.NAMES)]
  for seed, r in zip(seeds, results):
    lines.append(f"| seed {seed} | " + " | ".join(f"{100 * r[k]:.2f}" for k in metrics.NAMES) + " |")
  lines.append(f"| mean ± std ({len(results)} runs) | " + " | ".join(
      f"{100 * stats['mean'][k]:.2f} ± {100 * stats['std'][k]:.2f}" for k in metrics.NAMES) + " |")
  return "\n".join(lines) + "\n"


def write_summary(workdir: str, seeds: Sequence[int], results: Sequence[Mapping[str, float]]) -> str:
  """Writes results.md and results.csv to ``workdir``; returns the Markdown."""
  os.makedirs(workdir, exist_ok=True)
  table = markdown_table(seeds, results)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(table)
  stats = mean_and_std(results)
  with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["run", "seed", *metrics.NAMES])
    for seed, r in zip(seeds, results):
      writer.writerow([f"seed_{seed}", seed, *(repr(float(r[k])) for k in metrics.NAMES)])
    for name in ("mean", "std"):
      writer.writerow([name, "", *(repr(stats[name][k]) for k in metrics.NAMES)])
  return table


def train_repeated(config: train.TrainConfig, workdir: str, runs: int) -> List[Dict[str, Any]]:
  """Trains ``runs`` runs with seeds config.seed, config.seed + 1, ... and
  writes their summary. Each run resumes from its own checkpoints (a
  finished one is only tested again), so an interrupted series continues
  where it stopped."""
  if runs < 1:
    raise ValueError(f"runs must be at least 1, got {runs}")
  seeds = [config.seed + i for i in range(runs)]
  results = [train.train_and_evaluate(dataclasses.replace(config, seed=seed), run_workdir(workdir, seed))
             for seed in seeds]
  write_summary(workdir, seeds, results)
  return results
