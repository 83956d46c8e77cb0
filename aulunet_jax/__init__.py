"""aulunet_jax: AULUNet (BMVC 2025) skin-lesion segmentation in JAX/Flax."""

from aulunet_jax.flops import count_flops, count_params
from aulunet_jax.models import AULUNet, UNet, build_model, list_models

__version__ = "0.1.0"
