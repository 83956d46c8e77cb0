"""Parameter and FLOP counting on XLA's own cost analysis.

``count_flops`` compiles the model's inference forward pass with the plain
reference ops (``ops.reference_ops``: it counts the model's arithmetic, not
that of a formulation chosen for speed) and reads ``cost_analysis()``: XLA's
FLOPs (a multiply-accumulate is 2 FLOPs, an element-wise operation 1) and
bytes accessed.

The paper's "GFLOPs" are multiply-accumulates counted by thop (0.069 G for
AULUNet, 13.758 G for U-Net at 256x256). thop counts a convolution at every
output position over its full window, padding taps included, and a
transposed convolution over the kernel at every *output* position (stride^2
times its real work). XLA counts only the taps that touch real input. So

  gmacs = (xla_flops / 2 + window taps XLA skips) / 1e9

where the skipped taps are counted exactly from each convolution's shapes,
padding and dilations in the lowered StableHLO. Element-wise work (BatchNorm,
activations, gates, pooling, resizing) enters at half its XLA FLOPs; thop
has its own per-layer rules for those, which is where the small remaining
difference from the paper's figures comes from.
"""

import re
from typing import Any, Dict, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from aulunet_jax import ops


def count_params(variables: Any) -> int:
  """Number of trainable parameters (the 'params' collection)."""
  params = variables["params"] if isinstance(variables, dict) and "params" in variables else variables
  return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def compiled_cost(compiled) -> Dict[str, float]:
  """XLA's cost analysis of a compiled computation, as one dict (``flops``,
  ``bytes accessed``, ...)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per program
    cost = cost[0]
  return cost or {}


_CONV = re.compile(
    r"stablehlo\.convolution\(.*?dim_numbers = \[([^\]]*)\]x\[([^\]]*)\]->\[([^\]]*)\], "
    r"window = \{(.*?)\}.*?feature_group_count = (\d+).*?: \(tensor<([^>]*)>, tensor<([^>]*)>\) -> tensor<([^>]*)>")


def _ints(text: str, key: str, default: List[int]) -> List[int]:
  m = re.search(key + r" = \[(\[.*?\]\]|[^\]]*)", text)
  if not m:
    return default
  return [int(v) for v in re.findall(r"-?\d+", m.group(1))]


def _shape(tensor_type: str) -> List[int]:
  return [int(d) for d in tensor_type.split("x")[:-1]]


def _valid_taps(in_size, out_size, k, stride, pad_lo, lhs_dil, rhs_dil) -> int:
  """Sum over output positions of the kernel taps that land on real input
  (not padding, not the holes of an lhs-dilated input), along one axis."""
  o = np.arange(out_size)[:, None]
  t = np.arange(k)[None, :]
  pos = o * stride + t * rhs_dil - pad_lo       # position in the dilated input
  real = (pos >= 0) & (pos <= (in_size - 1) * lhs_dil) & (pos % lhs_dil == 0)
  return int(real.sum())


def skipped_window_macs(stablehlo_text: str) -> int:
  """MACs that a full-window count (thop's) adds to XLA's for every
  convolution in a lowered module: taps on padding or on dilation holes."""
  total = 0
  for lhs_dims, rhs_dims, out_dims, window, groups, lhs_t, rhs_t, out_t in _CONV.findall(stablehlo_text):
    lhs_dims, rhs_dims, out_dims = ([d.strip() for d in s.split(",")] for s in (lhs_dims, rhs_dims, out_dims))
    lhs, rhs, out = _shape(lhs_t), _shape(rhs_t), _shape(out_t)
    spatial = [d for d in lhs_dims if d not in ("b", "f")]
    n = len(spatial)
    stride = _ints(window, "stride", [1] * n)
    pad = _ints(window, "pad", [0] * 2 * n)
    lhs_dil = _ints(window, "lhs_dilate", [1] * n)
    rhs_dil = _ints(window, "rhs_dilate", [1] * n)
    cin_per_group = rhs[rhs_dims.index("i")]
    full = float(np.prod(out)) * cin_per_group
    valid = float(np.prod([out[out_dims.index(d)] for d in ("b", "f")])) * cin_per_group
    for j, d in enumerate(spatial):
      k = rhs[rhs_dims.index(d)]
      full *= k
      valid *= _valid_taps(lhs[lhs_dims.index(d)], out[out_dims.index(d)], k, stride[j], pad[2 * j],
                           lhs_dil[j], rhs_dil[j])
    total += int(full - valid)
  return total


def count_flops(model, variables, input_shape: Sequence[int] = (256, 256, 3), batch_size: int = 1) -> Dict[str, float]:
  """Cost of one inference forward pass, per image.

  Args:
    model: a flax module taking (images, train=False).
    variables: its variables ({'params': ..., 'batch_stats': ...}).
    input_shape: (H, W, C) of one image.
    batch_size: the batch compiled; figures are divided by it.

  Returns a dict with ``params``, ``xla_flops``, ``gmacs`` (paper convention,
  see the module docstring), ``bytes_accessed`` and ``transcendentals``.
  """
  if len(input_shape) != 3:
    raise ValueError(f"input_shape is (H, W, C) of one image, got {tuple(input_shape)}")
  images = jax.ShapeDtypeStruct((batch_size, *input_shape), jnp.float32)
  with ops.reference_ops():
    lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, images)
  cost = compiled_cost(lowered.compile())
  flops = float(cost.get("flops", 0.0))
  skipped = skipped_window_macs(lowered.as_text())
  return {
      "params": count_params(variables),
      "xla_flops": flops / batch_size,
      "gmacs": (flops / 2 + skipped) / batch_size / 1e9,
      "bytes_accessed": float(cost.get("bytes accessed", 0.0)) / batch_size,
      "transcendentals": float(cost.get("transcendentals", 0.0)) / batch_size,
  }
