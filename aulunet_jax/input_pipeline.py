"""Grain input pipelines over the prepared ``isic`` TFDS datasets.

Training, evaluation and prediction read the array_record files that
``tfds build datasets/isic`` wrote, through ``tfds.data_source`` and grain;
nothing here imports TensorFlow (a test runs this module with the import
blocked).

Layout of the data, for P processes with D local devices each and a global
batch of B examples (b = B / P per process, B / (P * D) per device):

* Training: an endless stream of epochs. Each epoch is a fresh permutation of
  the split (grain's index shuffle, seeded by ``seed`` and the epoch), cut to
  ``steps_per_epoch = n // B`` whole global batches: the incomplete last batch
  is dropped. Global batch s holds stream positions [s*B, (s+1)*B); process p
  takes the slice [p*b, (p+1)*b) of it. Each element's augmentation draws its
  randomness from ``seed`` and its stream position, so the global batches are
  the same whatever P, D or ``worker_count``, and the iterator state (the next
  position) is all a checkpoint needs.
* Evaluation: one pass over the split in its stored order, padded to whole
  global batches; padding carries ``valid = False``.

Preprocessing is the reference's: image -> per-image min-max to float32
[0, 255], mask -> mask/255 (soft values kept); training adds the reference's
augmentation (``aulunet_jax.augment``) after normalisation, as the reference
did.
"""

import fcntl
import functools
import json
import os
import subprocess
import sys
from typing import Any, Dict, Optional, Tuple, Union

from absl import flags
from etils import epath
import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from aulunet_jax import augment as augment_lib
from aulunet_jax import preprocessing

DATASET_NAME = "isic"


class DatasetNotPreparedError(FileNotFoundError):
  """The requested dataset has not been built into the data directory."""


def resolve_data_dir(data_dir: Optional[str] = None) -> str:
  """``data_dir``, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (TFDS's own default)."""
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def _parse(dataset: str) -> Tuple[str, Optional[str]]:
  """'isic/2017' or 'isic/2017:1.0.0' -> ('2017', '1.0.0' or None)."""
  name, _, rest = dataset.partition("/")
  config, _, version = rest.partition(":")
  if name != DATASET_NAME or not config:
    raise ValueError(f"dataset must look like 'isic/<config>[:<version>]' (e.g. 'isic/2017', 'isic/synthetic'), "
                     f"got {dataset!r}")
  return config, version or None


def build_command(dataset: str, data_dir: Optional[str] = None) -> str:
  """The shell command that prepares ``dataset`` (run from the repository root)."""
  config, _ = _parse(dataset)
  command = f"tfds build datasets/isic --config={config} --data_dir={resolve_data_dir(data_dir)}"
  if config in ("2017", "2018"):
    command += " --manual_dir=<folder with the ISIC archives>"
  return command


def dataset_dir(dataset: str, data_dir: Optional[str] = None) -> epath.Path:
  """The prepared dataset's directory (the newest version unless one is named)."""
  config, version = _parse(dataset)
  config_dir = epath.Path(resolve_data_dir(data_dir)) / DATASET_NAME / config
  if version:
    candidates = [config_dir / version]
  else:
    candidates = sorted((p for p in config_dir.iterdir() if p.is_dir()) if config_dir.is_dir() else [],
                        key=lambda p: tuple(int(x) if x.isdigit() else -1 for x in p.name.split(".")), reverse=True)
  for candidate in candidates:
    if (candidate / "dataset_info.json").exists():
      return candidate
  raise DatasetNotPreparedError(f"{dataset} is not prepared in {resolve_data_dir(data_dir)} (no "
                                f"{config_dir}/{version or '<version>'}/dataset_info.json). Build it with:\n  "
                                f"{build_command(dataset, data_dir)}")


def dataset_source(dataset: str, split: str, data_dir: Optional[str] = None):
  """Random-access source of decoded examples (a ``tfds.data_source``).

  Examples are dicts of numpy values: image uint8 HxWx3, mask uint8 HxWx1
  (0-255), image_id bytes, original_height / original_width ints.
  """
  builder = tfds.builder_from_directory(dataset_dir(dataset, data_dir))
  if split not in builder.info.splits:
    raise ValueError(f"{dataset} has no split {split!r}; it has {sorted(builder.info.splits)}")
  return builder.as_data_source(split)


def num_examples(dataset: str, split: str, data_dir: Optional[str] = None) -> int:
  return len(dataset_source(dataset, split, data_dir))


def _whole_batches(n: int, global_batch_size: int, what: str) -> int:
  if n < global_batch_size:
    raise ValueError(f"{what} has {n} examples, fewer than one global batch of {global_batch_size}")
  return n // global_batch_size


def steps_per_epoch(dataset: str, split: str, data_dir: Optional[str] = None, *, global_batch_size: int) -> int:
  """Whole global batches in one training epoch (the remainder is dropped)."""
  return _whole_batches(num_examples(dataset, split, data_dir), global_batch_size, f"{dataset} {split}")


def _layout(global_batch_size: int, process_index: Optional[int], process_count: Optional[int],
            local_device_count: Optional[int]) -> Tuple[int, int, int, int]:
  """(process_index, process_count, local_device_count, per-process batch), checked."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  local_device_count = jax.local_device_count() if local_device_count is None else local_device_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
  if global_batch_size <= 0 or global_batch_size % (process_count * local_device_count):
    raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple of process_count "
                     f"({process_count}) x local_device_count ({local_device_count})")
  return process_index, process_count, local_device_count, global_batch_size // process_count


class _ShuffledEpochs(grain.MapDataset):
  """Endless epochs of a shuffled dataset, each cut to its first ``epoch_length`` elements.

  ``parent`` is a ``MapDataset.shuffle``d dataset of length n, whose index
  e*n + i is element i of epoch e's permutation.
  """

  def __init__(self, parent: grain.MapDataset, epoch_length: int):
    super().__init__(parent)
    self._epoch_length = epoch_length

  def __len__(self) -> int:
    return sys.maxsize

  def __str__(self) -> str:
    return f"_ShuffledEpochs(epoch_length={self._epoch_length})"

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, position = divmod(index, self._epoch_length)
    return self._parent[epoch * len(self._parent) + position]


class _ProcessShare(grain.MapDataset):
  """This process's elements: its slice [p*b, (p+1)*b) of every global batch of B = P*b."""

  def __init__(self, parent: grain.MapDataset, process_batch: int, process_index: int, process_count: int):
    super().__init__(parent)
    self._b, self._p, self._count = process_batch, process_index, process_count

  def __len__(self) -> int:
    parent = len(self._parent)
    return parent if parent == sys.maxsize else parent // self._count

  def __str__(self) -> str:
    return f"_ProcessShare(process {self._p} of {self._count}, {self._b} per batch)"

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    step, j = divmod(index, self._b)
    return self._parent[(step * self._count + self._p) * self._b + j]


class _Padded(grain.MapDataset):
  """The parent followed by ``length - len(parent)`` copies of ``padding``; adds 'valid'."""

  def __init__(self, parent: grain.MapDataset, length: int, padding: Dict[str, Any]):
    super().__init__(parent)
    self._length, self._padding = length, padding

  def __len__(self) -> int:
    return self._length

  def __str__(self) -> str:
    return f"_Padded(length={self._length})"

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    if index < len(self._parent):
      return dict(self._parent[index], valid=True)
    return dict(self._padding, valid=False)


def _model_inputs(record: Dict[str, Any]) -> Dict[str, np.ndarray]:
  return {"image": preprocessing.normalize_image(record["image"]), "mask": preprocessing.mask_to_float(record["mask"])}


def _eval_inputs(record: Dict[str, Any]) -> Dict[str, np.ndarray]:
  image_id = record["image_id"]
  return dict(_model_inputs(record), valid=np.bool_(record["valid"]),
              image_id=image_id.decode() if isinstance(image_id, bytes) else str(image_id))


def _augment(element: Dict[str, np.ndarray], rng: np.random.Generator) -> Dict[str, np.ndarray]:
  image, mask = augment_lib.augment(element["image"], element["mask"], rng)
  return {"image": image, "mask": mask}


def _per_device(batch: Dict[str, np.ndarray], local_device_count: int) -> Dict[str, np.ndarray]:
  return {k: v.reshape((local_device_count, v.shape[0] // local_device_count) + v.shape[1:]) for k, v in batch.items()}


def _read_options(num_threads: Optional[int], buffer: int) -> grain.ReadOptions:
  num_threads = num_threads or min(16, os.cpu_count() or 1)
  return grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(buffer, num_threads))


def train_iterator(dataset: str, split: str, data_dir: Optional[str] = None, *, global_batch_size: int, seed: int,
                   augment: bool = True, worker_count: int = 0, num_threads: Optional[int] = None,
                   process_index: Optional[int] = None, process_count: Optional[int] = None,
                   local_device_count: Optional[int] = None) -> grain.DatasetIterator:
  """Endless training batches for this process, shaped for pmap.

  Yields {'image': float32 [D, B/(P*D), H, W, 3] in [0, 255], 'mask': float32
  [D, B/(P*D), H, W, 1] in [0, 1]}. The iterator's ``get_state()`` /
  ``set_state()`` (or grain's orbax handler) checkpoint the position.
  worker_count > 0 preprocesses in that many worker processes (same output);
  num_threads is the number of reading threads in each (default: CPUs, at
  most 16). process_index / process_count / local_device_count default to
  JAX's.
  """
  p, count, devices, b = _layout(global_batch_size, process_index, process_count, local_device_count)
  source = dataset_source(dataset, split, data_dir)
  if not 0 <= seed < 2 ** 32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}")
  shuffle_seed, augment_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
  epoch_length = _whole_batches(len(source), global_batch_size, f"{dataset} {split}") * global_batch_size
  stream = _ShuffledEpochs(grain.MapDataset.source(source).shuffle(shuffle_seed), epoch_length).map(_model_inputs)
  if augment:
    stream = stream.random_map(_augment, seed=augment_seed)
  ds = _ProcessShare(stream, b, p, count).to_iter_dataset(_read_options(num_threads, 2 * b))
  if worker_count > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app, use their defaults
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=b))
  return iter(ds.batch(b, drop_remainder=True).map(functools.partial(_per_device, local_device_count=devices)))


def eval_iterator(dataset: str, split: str, data_dir: Optional[str] = None, *, global_batch_size: int,
                  num_threads: Optional[int] = None, process_index: Optional[int] = None,
                  process_count: Optional[int] = None,
                  local_device_count: Optional[int] = None) -> grain.DatasetIterator:
  """One pass over the split in stored order, every example exactly once.

  Yields {'image', 'mask'} as ``train_iterator`` does, plus 'valid': bool
  [D, B/(P*D)] (False on the padding of the last global batch) and
  'image_id': str [D, B/(P*D)] ('' on padding). All processes yield the same
  number of batches.
  """
  p, count, devices, b = _layout(global_batch_size, process_index, process_count, local_device_count)
  source = dataset_source(dataset, split, data_dir)
  n = len(source)
  image_shape, mask_shape = source.dataset_info.features["image"].shape, source.dataset_info.features["mask"].shape
  padding = {"image": np.zeros(image_shape, np.uint8), "mask": np.zeros(mask_shape, np.uint8), "image_id": ""}
  padded = _Padded(grain.MapDataset.source(source), -(-n // global_batch_size) * global_batch_size, padding)
  ds = _ProcessShare(padded.map(_eval_inputs), b, p, count).to_iter_dataset(_read_options(num_threads, 2 * b))
  return iter(ds.batch(b).map(functools.partial(_per_device, local_device_count=devices)))


def _builder_folder() -> str:
  """datasets/isic of this installation (the TFDS builder folder)."""
  import datasets.isic  # pylint: disable=g-import-not-at-top
  folder = os.path.dirname(os.path.abspath(datasets.isic.__file__))
  if not os.path.exists(os.path.join(folder, "isic_dataset_builder.py")):
    raise FileNotFoundError(f"{folder} has no isic_dataset_builder.py: another 'datasets' package shadows the "
                            f"project's; run from the repository root or reinstall aulunet-jax")
  return folder


def build_synthetic_if_missing(data_dir: Optional[str] = None,
                               config: Union[str, Dict[str, Any]] = "synthetic") -> str:
  """Builds isic/<config> (a synthetic config) unless prepared; returns 'isic/<name>'.

  Runs ``tfds build`` (the TFDS command line, as in the README) in a
  subprocess, so this process never imports TensorFlow, which encoding the
  images needs. ``config`` is a config name or the kwargs of an IsicConfig
  (e.g. {'name': 'synthetic_64', 'source': 'synthetic', 'image_size': 64}).
  Concurrent callers on one machine (e.g. the processes of a multi-process
  run) wait on a file lock, and only the first one builds.
  """
  name = config if isinstance(config, str) else config["name"]
  dataset = f"{DATASET_NAME}/{name}"
  root = resolve_data_dir(data_dir)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, f".{DATASET_NAME}_{name}.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      dataset_dir(dataset, root)
      return dataset
    except DatasetNotPreparedError:
      pass
    config_arg = config if isinstance(config, str) else json.dumps(config)
    command = [sys.executable, "-m", "tensorflow_datasets.scripts.cli.main", "build", _builder_folder(),
               f"--config={config_arg}", f"--data_dir={root}"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
      raise RuntimeError(f"Building {dataset} failed (exit {result.returncode}): {' '.join(command)}\n"
                         f"{result.stderr[-4000:]}")
    dataset_dir(dataset, root)
  return dataset
