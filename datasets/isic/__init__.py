"""isic dataset: ISIC 2017 / 2018 lesion segmentation and a synthetic stand-in."""
