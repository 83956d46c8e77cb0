"""Orbax checkpoints: inference checkpoints (a model's variables plus what
rebuilds the model) and training checkpoints (everything a run needs to
continue exactly where it stopped).

Layout of an inference checkpoint directory (written atomically by orbax):
  <path>/variables/   the flax variables {'params', 'batch_stats'}
  <path>/model/       JSON {'name': registry name, 'kwargs': {...}}

Layout of a training run's checkpoints:
  <workdir>/checkpoints/latest/<epoch>/   written after every epoch
  <workdir>/checkpoints/best/<epoch>/     the lowest validation loss so far
each step directory holding
  state/   the train state (step, params, batch_stats, opt_state)
  model/   the model spec, as in an inference checkpoint
  meta/    JSON: epoch, best-so-far, seed, the run's configuration
  data/    (latest only) the training data iterator's position, one file
           per JAX process

Writes are atomic: orbax writes a step into a temporary directory and
renames it into place when complete, so a process killed while saving
leaves at worst a temporary directory, which is ignored (and cleaned up on
the next start), never a step that cannot be read. Each epoch writes
``latest`` before ``best``; a run killed between the two finds in its latest
checkpoint's meta that this epoch was the best, and writes ``best`` from it
when it resumes. Arrays are stored
unreplicated and come back as host arrays, so a checkpoint loads whatever
the device count of the machine that saved it.
"""

import os
from typing import Any, Dict, Optional, Tuple

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import serialization

from aulunet_jax.models.registry import build_model

LATEST = "latest"
BEST = "best"


def model_spec(name: str, **kwargs) -> Dict[str, Any]:
  """The JSON-serialisable description of a registered model."""
  return {"name": name, "kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}}


def _build(spec: Dict[str, Any]):
  kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.get("kwargs", {}).items()}
  return build_model(spec["name"], **kwargs)


def abstract_variables(model, image_size: int = 64, channels: int = 3):
  """Shapes and dtypes of ``model``'s variables, without computing them."""
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, image_size, image_size, channels)),
                                           train=False))


def _abspath(path) -> epath.Path:
  return epath.Path(os.path.abspath(os.fspath(path)))


def save_inference_checkpoint(path: str, variables: Any, spec: Dict[str, Any], force: bool = False) -> str:
  """Writes variables and model spec to ``path`` (a directory that must not
  exist unless ``force``)."""
  path = _abspath(path)
  variables = jax.device_get(variables)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(path, ocp.args.Composite(variables=ocp.args.StandardSave(variables),
                                        model=ocp.args.JsonSave(spec)), force=force)
  return os.fspath(path)


def _resolve(path: epath.Path) -> Tuple[str, epath.Path]:
  """('inference' | 'training', checkpoint directory) for any path that
  ``load_inference_checkpoint`` accepts."""
  if (path / "model").exists() and (path / "variables").exists():
    return "inference", path
  if (path / "model").exists() and (path / "state").exists():
    return "training", path
  if (path / "checkpoints" / BEST).is_dir():
    path = path / "checkpoints" / BEST
  if path.is_dir():
    with _manager(path, read_only=True) as manager:
      step = manager.latest_step()
    if step is not None:
      return "training", path / str(step)
  raise FileNotFoundError(
      f"{path} is not an aulunet_jax checkpoint: expected an inference checkpoint (subdirectories 'variables' and "
      f"'model'), a training checkpoint (subdirectories 'state' and 'model'), a directory of training "
      f"checkpoints such as <workdir>/checkpoints/best, or a training workdir")


def load_inference_checkpoint(path: str, **model_overrides) -> Tuple[Any, Any]:
  """(model, variables) from an inference or a training checkpoint.

  ``path`` is an inference checkpoint (``save_inference_checkpoint``), one
  training checkpoint directory (``<workdir>/checkpoints/best/<epoch>``), a
  directory of them (its highest epoch is taken), or a training workdir (its
  best checkpoint is taken). The variables come back as arrays on the
  default device, whatever the device count of the machine that saved them.
  ``model_overrides`` change attributes that do not affect the variables
  (e.g. ``dtype``).
  """
  kind, path = _resolve(_abspath(path))
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    spec = ckptr.restore(path, ocp.args.Composite(model=ocp.args.JsonRestore()))["model"]
    model = _build(spec)
    target = abstract_variables(model)
    if kind == "inference":
      device = jax.devices()[0]
      target = jax.tree_util.tree_map(
          lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=jax.sharding.SingleDeviceSharding(device)),
          target)
      variables = ckptr.restore(path, ocp.args.Composite(variables=ocp.args.StandardRestore(target)))["variables"]
    else:
      state = ckptr.restore(path, ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
      variables = jax.device_put(serialization.from_state_dict(
          jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), target),
          {"params": state["params"], "batch_stats": state["batch_stats"]}))
  if model_overrides:
    model = _build({"name": spec["name"], "kwargs": {**spec.get("kwargs", {}), **model_overrides}})
  return model, variables


def _manager(directory: epath.Path, with_data: bool = False, read_only: bool = False) -> ocp.CheckpointManager:
  handlers = {"state": ocp.StandardCheckpointHandler(), "model": ocp.JsonCheckpointHandler(),
              "meta": ocp.JsonCheckpointHandler()}
  if with_data:
    handlers["data"] = grain.checkpoint.CheckpointHandler()
  options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=not read_only,
                                         read_only=read_only, cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


class TrainingCheckpoints:
  """The ``latest`` and ``best`` checkpoints of a training run in ``workdir``.

  ``state`` is an unreplicated flax train state (any flax struct); it is
  saved as its state dict and restored into a given template, as host
  arrays. All JAX processes must make the same calls (orbax synchronises
  them); arrays and JSON are written by process 0, the data iterator's
  position by every process.
  """

  def __init__(self, workdir: str):
    self.directory = _abspath(workdir) / "checkpoints"
    self._latest = _manager(self.directory / LATEST, with_data=True)
    self._best = _manager(self.directory / BEST)

  def path(self, kind: str, epoch: Optional[int] = None) -> Optional[str]:
    """Directory of the ``kind`` ('latest' | 'best') checkpoint at ``epoch``
    (default: its most recent), or None if there is none."""
    manager = self._latest if kind == LATEST else self._best
    epoch = manager.latest_step() if epoch is None else epoch
    return None if epoch is None else os.fspath(self.directory / kind / str(epoch))

  def _args(self, state, spec, meta, data_iterator=None):
    items = dict(state=ocp.args.StandardSave(serialization.to_state_dict(jax.device_get(state))),
                 model=ocp.args.JsonSave(spec), meta=ocp.args.JsonSave(meta))
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return ocp.args.Composite(**items)

  def save_latest(self, epoch: int, state, spec: Dict[str, Any], meta: Dict[str, Any], data_iterator) -> str:
    self._latest.save(epoch, args=self._args(state, spec, meta, data_iterator))
    return self.path(LATEST, epoch)

  def save_best(self, epoch: int, state, spec: Dict[str, Any], meta: Dict[str, Any]) -> str:
    self._best.save(epoch, args=self._args(state, spec, meta))
    return self.path(BEST, epoch)

  def best_epoch(self) -> Optional[int]:
    return self._best.latest_step()

  def _restore(self, manager, epoch, template, data_iterator=None):
    target = jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(jax.device_get(template)))
    items = dict(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = manager.restore(epoch, args=ocp.args.Composite(**items))
    return serialization.from_state_dict(template, restored["state"]), restored["meta"]

  def restore_latest(self, template, data_iterator) -> Optional[Tuple[Any, Dict[str, Any]]]:
    """(state, meta) of the latest checkpoint, with ``data_iterator`` moved to
    its saved position; None when the run has no checkpoint yet."""
    epoch = self._latest.latest_step()
    if epoch is None:
      return None
    try:
      return self._restore(self._latest, epoch, template, data_iterator)
    except ValueError as e:
      if "process_" in str(e):
        raise ValueError(f"{self.path(LATEST, epoch)} holds no data-iterator position for JAX process "
                         f"{jax.process_index()} of {jax.process_count()}: a run resumes with the number of "
                         f"processes it was started with ({e})") from None
      raise

  def restore_best(self, template) -> Tuple[Any, Dict[str, Any]]:
    """(state, meta) of the best checkpoint."""
    epoch = self._best.latest_step()
    if epoch is None:
      raise FileNotFoundError(f"no best checkpoint in {self.directory / BEST}")
    return self._restore(self._best, epoch, template)

  def close(self):
    self._latest.close()
    self._best.close()
