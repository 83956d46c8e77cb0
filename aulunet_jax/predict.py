"""Segmenting images of any size with a trained model.

An image goes through the training data's preprocessing (PIL bilinear resize
to the model's input size, per-image min-max to [0, 255]), the model gives
lesion probabilities at that size, and these are resized back to the image's
own size bilinearly (on the probabilities, not on a thresholded mask) and
thresholded at 0.5: the ISIC challenge's masks are 0/255 at the size of
their image.

  segmenter = Segmenter.from_checkpoint("ckpt/")
  mask = segmenter.segment(image)            # uint8 HxW, 0 or 255
  probs = segmenter.probabilities([a, b])    # float32 maps, one per image

``predict_files`` does the same for image files (JPEG, PNG, BMP, TIFF),
writing ISIC-style ``<stem>_segmentation.png`` masks.
"""

import dataclasses
import functools
import os
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import jax
import numpy as np
from PIL import Image, ImageOps

from aulunet_jax import preprocessing

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Suffixes of the files this module writes (and of ISIC's own masks and
# superpixel maps): never inputs.
OUTPUT_SUFFIXES = ("_segmentation", "_overlay", "_probability", "_superpixels")

ArrayOrArrays = Union[np.ndarray, Sequence[np.ndarray]]


class UnreadableImageError(ValueError):
  """An image file that cannot be decoded (corrupt, truncated, not an image)."""


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
  """Any HxW, HxWx1, HxWx3 or HxWx4 array -> uint8 HxWx3.

  Greyscale is repeated over three channels; an alpha channel is dropped.
  Arrays that are not uint8 (16-bit, float) are min-max scaled to 0..255
  first: the model's input is a per-image min-max anyway, so this keeps the
  most precision that the uint8 resize of the reference allows.
  """
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or 0 in image.shape:
    raise ValueError(f"an image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
  if image.shape[-1] == 4:
    image = image[..., :3]
  if image.dtype == np.bool_:
    image = image.astype(np.uint8) * 255
  if image.dtype != np.uint8:
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
      raise ValueError(f"an image must hold integers or floats, got {image.dtype}")
    values = image.astype(np.float64)
    if not np.isfinite(values).all():
      raise ValueError("an image holds NaN or infinite values")
    lo, hi = values.min(), values.max()
    image = np.round((values - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)).astype(np.uint8)
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return image


def read_image(path: str) -> np.ndarray:
  """An image file as uint8 HxWx3, turned upright as its EXIF orientation says.

  Raises UnreadableImageError naming the file when it cannot be decoded.
  """
  try:
    with Image.open(path) as img:
      img.load()
      img = ImageOps.exif_transpose(img)
      if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
      elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
      elif img.mode == "LA":
        img = img.convert("L")
      array = np.asarray(img)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise UnreadableImageError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None
  try:
    return to_rgb_uint8(array)
  except ValueError as e:
    raise UnreadableImageError(f"{path}: {e}") from None


def resize_probabilities(probs: np.ndarray, height: int, width: int) -> np.ndarray:
  """float HxW probabilities -> float32 height x width, PIL bilinear on a float32 ("F") image."""
  probs = np.asarray(probs, np.float32)
  if probs.ndim == 3 and probs.shape[-1] == 1:
    probs = probs[..., 0]
  if probs.ndim != 2:
    raise ValueError(f"probabilities must be HxW or HxWx1, got shape {probs.shape}")
  if probs.shape == (height, width):
    return probs.copy()
  resized = Image.fromarray(probs).resize((width, height), resample=Image.BILINEAR)
  return np.clip(np.asarray(resized, np.float32), 0.0, 1.0)


def binarize(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """Probabilities -> uint8 mask, 255 where probs >= threshold (as the reference), else 0."""
  return np.where(np.asarray(probs) >= threshold, np.uint8(255), np.uint8(0))


# LLVM vectorises XLA's CPU loops 256 bits wide unless told otherwise, also
# on AVX-512 machines; the model's loops run over 5 to 60 channels per
# pixel, and one 16-wide masked vector covers 10 or 15 of them where 8-wide
# needs two. Same results; batch-8 inference 23.8 -> 22.9 ms, batch 1
# 3.64 -> 3.36 ms (2-core EPYC, same-process A/B). Without AVX-512, LLVM
# keeps the width it has; the option is one of XLA's CPU backend.
COMPILER_OPTIONS = {"xla_cpu_prefer_vector_width": 512}


@functools.partial(jax.jit, static_argnums=0, compiler_options=COMPILER_OPTIONS)
def forward(model, variables, images):
  """The inference forward pass as the library runs it (``Segmenter``,
  ``evaluate``, ``launch.benchmark``); compiled once per model settings and
  input shape (flax modules compare by their attributes)."""
  return model.apply(variables, images, train=False)


class Segmenter:
  """A model and its variables, ready to segment images of any size.

  Attributes:
    image_size: the square size the model sees (the training size, 256 for
      the paper's models; a multiple of 32).
    batch_size: images per forward pass; the last batch is padded, so that
      one compiled function serves every call.
    threshold: probability at or above which a pixel is lesion (the reference's >=).
  """

  def __init__(self, model, variables, image_size: int = 256, batch_size: int = 8, threshold: float = 0.5):
    if image_size % 32:
      raise ValueError(f"image_size must be a multiple of 32, got {image_size}")
    if batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    self.model = model
    self.variables = variables
    self.image_size = image_size
    self.batch_size = batch_size
    self.threshold = threshold

  @classmethod
  def from_checkpoint(cls, path: str, **kwargs) -> "Segmenter":
    from aulunet_jax import checkpoints
    model, variables = checkpoints.load_inference_checkpoint(path)
    return cls(model, variables, **kwargs)

  def model_probabilities(self, inputs: np.ndarray) -> np.ndarray:
    """Preprocessed float32 (N, S, S, 3) -> (N, S, S) lesion probabilities at
    the model's size, batch by batch."""
    inputs = np.asarray(inputs, np.float32)
    out = []
    for start in range(0, len(inputs), self.batch_size):
      batch = inputs[start:start + self.batch_size]
      n = len(batch)
      if n < self.batch_size:
        batch = np.concatenate([batch, np.zeros((self.batch_size - n,) + batch.shape[1:], batch.dtype)])
      probs = np.asarray(forward(self.model, self.variables, batch))
      if probs.shape[-1] != 1:
        raise ValueError(f"the model gives {probs.shape[-1]} output channels; segmentation needs one")
      out.append(probs[:n, ..., 0])
    return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size), np.float32)

  def preprocess(self, image: np.ndarray) -> np.ndarray:
    """One image of any size and type -> float32 S x S x 3, as in training."""
    return preprocessing.normalize_image(preprocessing.resize_image(to_rgb_uint8(image), self.image_size))

  def probabilities(self, images: ArrayOrArrays) -> Union[np.ndarray, List[np.ndarray]]:
    """Lesion probabilities at each image's own size, float32 HxW.

    ``images``: one image (HxW or HxWxC) or a sequence / (N, H, W, C) batch;
    returns one map or a list of maps accordingly.
    """
    single = isinstance(images, np.ndarray) and images.ndim in (2, 3)
    batch = [images] if single else list(images)
    inputs = np.stack([self.preprocess(image) for image in batch]) if batch else np.zeros(
        (0, self.image_size, self.image_size, 3), np.float32)
    probs = self.model_probabilities(inputs)
    maps = [resize_probabilities(p, *np.shape(image)[:2]) for p, image in zip(probs, batch)]
    return maps[0] if single else maps

  def segment(self, images: ArrayOrArrays) -> Union[np.ndarray, List[np.ndarray]]:
    """uint8 masks (0 or 255) at each image's own size; see ``probabilities``."""
    probs = self.probabilities(images)
    if isinstance(probs, np.ndarray):
      return binarize(probs, self.threshold)
    return [binarize(p, self.threshold) for p in probs]


def overlay(image: np.ndarray, mask: np.ndarray, colour=(255, 0, 0), alpha: float = 0.35) -> np.ndarray:
  """uint8 RGB image with the mask's lesion tinted and its outline drawn."""
  from aulunet_jax.figures import error_boundaries  # matplotlib: imported only when overlays are asked for
  lesion = np.asarray(mask) > 127
  out = image.astype(np.float32)
  tint = np.asarray(colour, np.float32)
  out[lesion] = (1 - alpha) * out[lesion] + alpha * tint
  width = max(1, round(max(lesion.shape) / 256))
  out[error_boundaries(lesion, np.zeros_like(lesion), width)] = tint
  return np.round(out).astype(np.uint8)


def find_images(inputs: Iterable[str]) -> Tuple[List[str], List[str]]:
  """Image files named by ``inputs`` (files, or directories searched
  recursively), sorted; and the files passed over with the reason.

  Files in directories are taken by extension (case-insensitive); outputs of
  this module and ISIC's masks/superpixel maps are passed over. A file named
  explicitly is always taken. A missing path is an error.
  """
  found, passed_over = [], []
  for entry in inputs:
    if os.path.isfile(entry):
      found.append(entry)
    elif os.path.isdir(entry):
      for root, dirs, files in os.walk(entry):
        dirs.sort()
        for name in sorted(files):
          stem, ext = os.path.splitext(name)
          path = os.path.join(root, name)
          if ext.lower() not in IMAGE_EXTENSIONS:
            passed_over.append(f"{path}: not a {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} file")
          elif stem.endswith(OUTPUT_SUFFIXES):
            passed_over.append(f"{path}: a mask, overlay, probability or superpixel map, not an image")
          else:
            found.append(path)
    else:
      raise FileNotFoundError(f"input {entry!r} is neither a file nor a directory")
  return found, passed_over


@dataclasses.dataclass
class PredictReport:
  written: List[str] = dataclasses.field(default_factory=list)
  failed: List[str] = dataclasses.field(default_factory=list)  # "path: reason"


def output_paths(image_path: str, output_dir: str, overlays: bool, probability_maps: bool) -> List[str]:
  stem = os.path.splitext(os.path.basename(image_path))[0]
  names = [f"{stem}_segmentation.png"]
  names += [f"{stem}_overlay.png"] if overlays else []
  names += [f"{stem}_probability.png"] if probability_maps else []
  return [os.path.join(output_dir, n) for n in names]


def predict_files(segmenter: Segmenter, paths: Sequence[str], output_dir: str, *, overlays: bool = False,
                  probability_maps: bool = False, overwrite: bool = False,
                  progress: Optional[Callable[[Iterable], Iterable]] = None) -> PredictReport:
  """Segments image files and writes, in ``output_dir``, for each ``<stem>.ext``:
  ``<stem>_segmentation.png`` (uint8 0/255, the image's size), and optionally
  ``<stem>_overlay.png`` and ``<stem>_probability.png`` (probability x 255,
  uint8 greyscale).

  Files that cannot be read are recorded in the report's ``failed`` list and
  the others still processed. Before any work, raises FileExistsError if an
  output exists and not ``overwrite``, or if two inputs would write the same
  output. ``progress`` wraps the iterable of batches (e.g. tqdm).
  """
  planned = {}
  for path in paths:
    for out in output_paths(path, output_dir, overlays, probability_maps):
      if out in planned:
        raise FileExistsError(f"{path} and {planned[out]} would both write {out}; predict them into different "
                              f"output directories")
      planned[out] = path
  if not overwrite:
    existing = [out for out in planned if os.path.exists(out)]
    if existing:
      more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
      raise FileExistsError(f"{existing[0]} exists{more}; pass overwrite=True (--overwrite) to replace outputs")
  os.makedirs(output_dir, exist_ok=True)

  report = PredictReport()
  batches = [paths[i:i + segmenter.batch_size] for i in range(0, len(paths), segmenter.batch_size)]
  for batch in (progress(batches) if progress else batches):
    images, names = [], []
    for path in batch:
      try:
        images.append(read_image(path))
        names.append(path)
      except UnreadableImageError as e:
        report.failed.append(str(e))
    if not images:
      continue
    for path, image, probs in zip(names, images, segmenter.probabilities(images)):
      mask = binarize(probs, segmenter.threshold)
      outs = output_paths(path, output_dir, overlays, probability_maps)
      Image.fromarray(mask).save(outs[0])
      if overlays:
        Image.fromarray(overlay(image, mask)).save(outs[1])
      if probability_maps:
        Image.fromarray(np.round(probs * 255).astype(np.uint8)).save(outs[-1])
      report.written.extend(outs)
  return report
