"""Model registry: build any model of the project from a name and keyword
arguments. Each entry is a model class plus the settings that define it."""

from typing import Any, Callable, Dict, Tuple

import flax.linen as nn

from aulunet_jax.models.aulunet import AULUNet
from aulunet_jax.models.unet import UNet

# name -> (class, defining settings, one-line description)
_MODELS: Dict[str, Tuple[Callable[..., nn.Module], Dict[str, Any], str]] = {
    "aulunet_v3": (AULUNet, {}, "the paper's AULUNet: AKF + RGF + LSG"),
    "aulunet_no_akf": (AULUNet, {"use_akf": False}, "AKF replaced by one depthwise 3x3 + PointConv"),
    "aulunet_no_rgf": (AULUNet, {"use_rgf": False}, "RGF replaced by the identity"),
    "aulunet_no_lsg": (AULUNet, {"use_lsg": False}, "LSG replaced by plain addition"),
    "aulunet_base": (AULUNet, {"use_akf": False, "use_rgf": False, "use_lsg": False},
                     "all three blocks replaced by their plain counterparts"),
    "aulunet_akf_d13": (AULUNet, {"akf_dilations": (1, 3)}, "AKF dilation pair (1, 3)"),
    "aulunet_akf_d23": (AULUNet, {"akf_dilations": (2, 3)}, "AKF dilation pair (2, 3)"),
    "aulunet_akf_equal": (AULUNet, {"akf_gate": "equal"}, "AKF with a fixed equal mix (alpha = 0.5)"),
    "aulunet_akf_spatial": (AULUNet, {"akf_gate": "spatial"}, "AKF with a per-pixel spatial gate"),
    "unet": (UNet, {}, "classic U-Net baseline, base width 32"),
}


def list_models():
  return sorted(_MODELS)


def describe(name: str) -> str:
  return _lookup(name)[2]


def _lookup(name):
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
  return _MODELS[name]


def build_model(name: str, **overrides) -> nn.Module:
  """Builds a registered model. ``overrides`` set or change any attribute,
  e.g. ``build_model('aulunet_v3', use_rgf=False, axis_name='batch')``."""
  cls, settings, _ = _lookup(name)
  kwargs = {**settings, **overrides}
  try:
    return cls(**kwargs)
  except TypeError as e:
    raise ValueError(f"model {name!r} ({cls.__name__}) does not take {sorted(overrides)}: {e}") from None
