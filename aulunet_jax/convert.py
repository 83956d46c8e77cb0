"""Official PyTorch AULUNet checkpoints <-> flax variables.

The flax model keeps the official module names, so each official
state_dict key maps to one flax leaf:

  enc0_conv.0.weight            -> params/enc0_conv/kernel     (O,I,3,3) -> (3,3,I,O)
  enc0_conv.1.{weight,bias}     -> params/enc0_bn/{scale,bias}
  enc0_conv.1.running_{mean,var}-> batch_stats/enc0_bn/{mean,var}
  X.dw_local.weight             -> params/X/dw_local/kernel    (C,1,3,3) -> (3,3,C)
  X.gate_conv.weight / .bias    -> params/X/gate_conv/kernel   (O,I,1,1) -> (I,O)
  X.bn.weight                   -> params/X/bn/scale
  head.0.weight / .bias         -> params/head/kernel, bias

The mapping is derived from the flax model's own variable tree, so it
covers any AULUNet configuration (widths, number of classes, ablations).
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from aulunet_jax.models.aulunet import AULUNet

# flax module name -> official module path, where they differ.
_MODULE_TO_TORCH = {"enc0_conv": "enc0_conv.0", "enc0_bn": "enc0_conv.1", "head": "head.0"}
_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def _template(model: AULUNet, image_size: int = 64):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, image_size, image_size,
                                                                                3)), train=False))


def key_map(model: Optional[AULUNet] = None) -> List[Tuple[Tuple[str, ...], str, Tuple[int, ...]]]:
  """[(flax path, official key, flax shape)] for every variable of ``model``."""
  model = model or AULUNet()
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(_template(model)))
  out = []
  for path, leaf in sorted(flat.items()):
    collection, *modules, name = path
    modules = [_MODULE_TO_TORCH.get(m, m) if i == 0 else m for i, m in enumerate(modules)]
    out.append((path, ".".join(modules + [_LEAF_TO_TORCH[(collection, name)]]), tuple(leaf.shape)))
  return out


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor, without importing torch
    value = value.detach().cpu().numpy()
  return np.asarray(value, dtype=np.float32)


def _torch_to_flax(w: np.ndarray, flax_shape: Tuple[int, ...]) -> np.ndarray:
  if w.ndim == 4 and len(flax_shape) == 4:  # full conv (O, I, kh, kw) -> (kh, kw, I, O)
    return w.transpose(2, 3, 1, 0)
  if w.ndim == 4 and len(flax_shape) == 3:  # depthwise (C, 1, kh, kw) -> (kh, kw, C)
    return w[:, 0].transpose(1, 2, 0)
  if w.ndim == 4 and len(flax_shape) == 2:  # 1x1 conv (O, I, 1, 1) -> (I, O)
    return w[:, :, 0, 0].T
  return w


def _flax_to_torch(w: np.ndarray, torch_ndim: int) -> np.ndarray:
  if torch_ndim != 4:
    return w
  if w.ndim == 4:
    return w.transpose(3, 2, 0, 1)
  if w.ndim == 3:
    return w.transpose(2, 0, 1)[:, None]
  return w.T[:, :, None, None]


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
  """The bare state_dict from what the official train.py saves: best.pth is a
  bare state_dict, latest.pth a dict holding it under 'model_state_dict'; a
  DataParallel 'module.' prefix is removed."""
  if not isinstance(checkpoint, Mapping):
    raise TypeError(f"expected a state_dict (a mapping), got {type(checkpoint).__name__}")
  state = checkpoint.get("model_state_dict", checkpoint)
  if not isinstance(state, Mapping):
    raise TypeError(f"'model_state_dict' holds a {type(state).__name__}, not a state_dict")
  return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def from_torch_state_dict(checkpoint: Mapping[str, Any], model: Optional[AULUNet] = None) -> Dict[str, Any]:
  """Official state_dict (torch tensors or numpy arrays) -> flax variables
  {'params': ..., 'batch_stats': ...} for ``model`` (default: AULUNet()).

  Raises ValueError naming every missing key, unexpected key and shape
  mismatch; ``num_batches_tracked`` entries are the only keys ignored.
  """
  state = {k: v for k, v in unwrap_state_dict(checkpoint).items() if not k.endswith("num_batches_tracked")}
  mapping = key_map(model)
  flat, problems = {}, []
  expected = {key for _, key, _ in mapping}
  for key in sorted(set(state) - expected):
    problems.append(f"unexpected key {key!r} (shape {tuple(np.shape(_to_numpy(state[key])))})")
  for path, key, shape in mapping:
    if key not in state:
      problems.append(f"missing key {key!r} (for {'/'.join(path)}, flax shape {shape})")
      continue
    w = _to_numpy(state[key])
    converted = _torch_to_flax(w, shape)
    if converted.shape != shape:
      problems.append(f"shape mismatch for {key!r}: got {tuple(w.shape)}, which gives {converted.shape}; "
                      f"expected flax shape {shape} at {'/'.join(path)}")
      continue
    flat[path] = jnp.asarray(converted)
  if problems:
    raise ValueError("cannot convert the state_dict to AULUNet variables:\n  " + "\n  ".join(problems))
  return flax.traverse_util.unflatten_dict(flat)


def to_torch_state_dict(variables: Mapping[str, Any], model: Optional[AULUNet] = None) -> Dict[str, np.ndarray]:
  """Flax variables -> official state_dict keys (numpy arrays; wrap them with
  torch.from_numpy to load_state_dict). Adds no num_batches_tracked entries,
  so load with strict=False or add them."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  out = {}
  for path, key, shape in key_map(model):
    if path not in flat:
      raise ValueError(f"variables lack {'/'.join(path)} (official key {key!r})")
    w = np.asarray(flat[path], np.float32)
    out[key] = _flax_to_torch(w, 4 if path[-1] == "kernel" else 1)
  return out
