from aulunet_jax.models.akf import AKF, PlainKernel
from aulunet_jax.models.aulunet import PAPER_WIDTHS, AULUNet
from aulunet_jax.models.layers import BatchNorm, PointConv
from aulunet_jax.models.lsg import LSG
from aulunet_jax.models.registry import build_model, describe, list_models
from aulunet_jax.models.rgf import RGF
from aulunet_jax.models.unet import UNet
