"""Orbax checkpoints of a model: its variables plus the registry name and
settings needed to rebuild it, so that a checkpoint alone is enough to run
inference.

Layout of an inference checkpoint directory (written atomically by orbax):
  <path>/variables/   the flax variables {'params', 'batch_stats'}
  <path>/model/       JSON {'name': registry name, 'kwargs': {...}}
"""

import os
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

from aulunet_jax.models.registry import build_model


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


def save_inference_checkpoint(path: str, variables: Any, spec: Dict[str, Any], force: bool = False) -> str:
  """Writes variables and model spec to ``path`` (a directory that must not
  exist unless ``force``)."""
  path = epath.Path(os.path.abspath(os.fspath(path)))
  variables = jax.device_get(variables)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(path, ocp.args.Composite(variables=ocp.args.StandardSave(variables),
                                        model=ocp.args.JsonSave(spec)), force=force)
  return os.fspath(path)


def load_inference_checkpoint(path: str, **model_overrides) -> Tuple[Any, Any]:
  """(model, variables) from a checkpoint written by ``save_inference_checkpoint``.

  The variables come back as arrays on the default device, whatever the
  device count of the machine that saved them. ``model_overrides`` change
  attributes that do not affect the variables (e.g. ``dtype``).
  """
  path = epath.Path(os.path.abspath(os.fspath(path)))
  if not (path / "model").exists() or not (path / "variables").exists():
    raise FileNotFoundError(f"{path} is not an aulunet_jax inference checkpoint (expected the subdirectories "
                            f"'variables' and 'model')")
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    spec = ckptr.restore(path, ocp.args.Composite(model=ocp.args.JsonRestore()))["model"]
    model = _build(spec)
    target = abstract_variables(model)
    device = jax.devices()[0]
    target = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=jax.sharding.SingleDeviceSharding(device)), target)
    variables = ckptr.restore(path, ocp.args.Composite(variables=ocp.args.StandardRestore(target)))["variables"]
  if model_overrides:
    model = _build({"name": spec["name"], "kwargs": {**spec.get("kwargs", {}), **model_overrides}})
  return model, variables
