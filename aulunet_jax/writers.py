"""Where a training run's numbers go: JSON lines and TensorBoard event files
in the workdir (written by JAX process 0 only).

  <workdir>/metrics.jsonl   one JSON object per line (strict JSON: a value
                            that is not finite is null):
                            {"epoch": 3, "split": "validation", "loss": ..., ...}
  <workdir>/tensorboard/    the same scalars, tagged "<split>/<name>"

A resumed run appends; each resumption is marked by a line
{"event": "resumed", "epoch": N}, and epochs after N that the killed run had
already logged appear again with the values of the redone epochs (which are
the same: resumption is exact). Readers take the last line of each (epoch,
split).
"""

import json
import math
import os
import time
from typing import Any, Dict, Mapping

import jax
import numpy as np


def _jsonable(value):
  """Plain JSON: arrays as lists, and a number that is not finite (NaN, such
  as the images/s of a one-step epoch, which is not measured) as null, since
  NaN and Infinity are not JSON and strict readers reject the whole line."""
  if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "__array__"):
    value = np.asarray(value).tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, list):
    return [_jsonable(v) for v in value]
  return value


class MetricWriter:
  """Writes scalar metrics per epoch as JSON lines and TensorBoard scalars."""

  def __init__(self, workdir: str, enabled: bool = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard = None
    if self.enabled:
      from tensorboardX import SummaryWriter
      os.makedirs(workdir, exist_ok=True)
      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def _append(self, record: Dict[str, Any]):
    with open(self.path, "a") as f:
      f.write(json.dumps(record, allow_nan=False) + "\n")

  def write(self, epoch: int, split: str, scalars: Mapping[str, Any]):
    if not self.enabled:
      return
    scalars = {k: _jsonable(v) for k, v in scalars.items()}
    self._append({"epoch": epoch, "split": split, **scalars, "time": time.time()})
    for name, value in scalars.items():
      if isinstance(value, (int, float)):
        self._tensorboard.add_scalar(f"{split}/{name}", value, epoch)
    self._tensorboard.flush()

  def mark_resumed(self, epoch: int):
    if self.enabled:
      self._append({"event": "resumed", "epoch": epoch, "time": time.time()})

  def close(self):
    if self._tensorboard is not None:
      self._tensorboard.close()


def read_metrics(workdir: str):
  """The records of ``<workdir>/metrics.jsonl``, the last one of each
  (epoch, split), in epoch order; resumption markers left out."""
  latest = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      if "split" in record:
        latest[(record["epoch"], record["split"])] = record
  return [latest[k] for k in sorted(latest)]
