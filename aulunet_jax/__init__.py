"""aulunet_jax: AULUNet (BMVC 2025) skin-lesion segmentation in JAX/Flax.

The top-level names are imported on first use, so that ``import aulunet_jax``
(and importing a light submodule such as ``aulunet_jax.allocator``, which
the launch scripts do before they re-execute themselves) does not load JAX.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AULUNet": "aulunet_jax.models",
    "UNet": "aulunet_jax.models",
    "build_model": "aulunet_jax.models",
    "list_models": "aulunet_jax.models",
    "count_flops": "aulunet_jax.flops",
    "count_params": "aulunet_jax.flops",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'aulunet_jax' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
