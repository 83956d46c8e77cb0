"""Throughput of the input pipeline alone (no model): images per second.

  python -m launch.pipeline_benchmark [--dataset=isic/synthetic] [--global_batch_size=8] [--batches=60]
                                      [--worker_count=0] [--num_threads=0] [--data_dir=...]

Measures reading + PNG decoding alone, training batches without and with the
reference augmentation, and evaluation batches, each after one warm-up
batch. Builds isic/synthetic first if it is missing.
"""

import time

from absl import app, flags

_DATASET = flags.DEFINE_string("dataset", "isic/synthetic", "Prepared dataset, e.g. isic/2017.")
_SPLIT = flags.DEFINE_string("split", "train", "Split to read.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: $TFDS_DATA_DIR or "
                                "~/tensorflow_datasets).")
_GLOBAL_BATCH_SIZE = flags.DEFINE_integer("global_batch_size", 8, "Global batch size (the reference's is 8).")
_BATCHES = flags.DEFINE_integer("batches", 60, "Batches timed per measurement, after one warm-up batch.")
_WORKER_COUNT = flags.DEFINE_integer("worker_count", 0, "Grain worker processes (0: threads only).")
_NUM_THREADS = flags.DEFINE_integer("num_threads", 0, "Reading threads (0: the pipeline's default).")


def _images_per_second(iterator, batches: int, batch_size: int) -> float:
  next(iterator)  # warm-up: thread pools, worker processes, file handles
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def main(argv):
  del argv
  import itertools
  import os

  from aulunet_jax import input_pipeline

  if _DATASET.value == "isic/synthetic":
    input_pipeline.build_synthetic_if_missing(_DATA_DIR.value)
  dataset, split, data_dir, batch = _DATASET.value, _SPLIT.value, _DATA_DIR.value, _GLOBAL_BATCH_SIZE.value
  threads = _NUM_THREADS.value or None
  n = input_pipeline.num_examples(dataset, split, data_dir)
  print(f"{dataset} {split}: {n} examples, global batch {batch}, {_WORKER_COUNT.value} workers, "
        f"{threads or 'default'} threads, {os.cpu_count()} CPUs")

  source = input_pipeline.dataset_source(dataset, split, data_dir)
  records = (source[i % n] for i in itertools.count())
  rows = [("read + decode (one thread)", _images_per_second(
      (next(records) for _ in itertools.count()), _BATCHES.value * batch, 1))]
  for augment in (False, True):
    it = input_pipeline.train_iterator(dataset, split, data_dir, global_batch_size=batch, seed=0, augment=augment,
                                       worker_count=_WORKER_COUNT.value, num_threads=threads)
    rows.append((f"train batches, augment={augment}", _images_per_second(it, _BATCHES.value, batch)))
    if _WORKER_COUNT.value:
      it.close()
  eval_batches = max(1, min(_BATCHES.value, -(-n // batch) - 1))
  it = input_pipeline.eval_iterator(dataset, split, data_dir, global_batch_size=batch, num_threads=threads)
  rows.append(("eval batches", _images_per_second(it, eval_batches, batch)))
  for name, rate in rows:
    print(f"{name:<32}{rate:>10.1f} images/s")


if __name__ == "__main__":
  app.run(main)
