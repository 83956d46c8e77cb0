"""Evaluating a trained model on a prepared split, under two protocols.

'paper' (the reference's test loop): predictions at the model's size (the
stored 256x256 images), thresholded at 0.5, one pixel confusion matrix over
the whole split; mIoU (the lesion-class IoU), DSC, accuracy, sensitivity,
specificity (``metrics.summarize``).

'isic_challenge' (the challenge's own scoring): each prediction is resized
back to its image's original size (bilinear on the probabilities, then
threshold 0.5) and compared with the original-resolution ground truth from
the ISIC archives in manual_dir; per-image accuracy, sensitivity,
specificity, Jaccard, thresholded Jaccard (0 below 0.65) and Dice, averaged
over images, as the official scorer (isic-challenge-scoring) computes them,
including its binarisation of the ground truth (value > 128). The synthetic
data needs no manual_dir: its native-size masks are drawn again from the
generator. Every original mask is checked against the stored one.

Evaluation runs on one device, reading the split in its stored order.
"""

import csv
import dataclasses
import io
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from aulunet_jax import input_pipeline, metrics, preprocessing, synthetic
from aulunet_jax.predict import Segmenter, binarize, resize_probabilities

PROTOCOLS = ("paper", "isic_challenge")
PAPER_SPLITS = ("train", "validation", "test")
YEARS = ("2017", "2018")
PER_IMAGE_NAMES = ("accuracy", "sensitivity", "specificity", "jaccard", "threshold_jaccard", "dice")
# The official scorer's ground-truth binarisation: lesion where the mask value is > 128.
ISIC_TRUTH_LEVEL = 128
# Ids and seed of the synthetic config's examples (datasets/isic builder, config 'synthetic').
SYNTHETIC_PREFIX = "synthetic_"
SYNTHETIC_SEED = 0


@dataclasses.dataclass
class Evaluation:
  """``metrics``: fractions; ``per_image``: one dict per image (id, size,
  [TP, FP, FN, TN] and the per-image scores of ``PER_IMAGE_NAMES``)."""
  protocol: str
  dataset: str
  split: str
  num_images: int
  metrics: Dict[str, float]
  per_image: List[Dict]


class OriginalMasks:
  """Original-resolution ground-truth masks of a prepared split: read from
  the challenge archives in ``manual_dir`` (zips or folders) for ISIC data,
  drawn again by the generator for synthetic data.

  A paper split (train / validation / test) comes from the official training
  archive, an official_* split from its own. The year is taken from the
  dataset's config name when it starts with 2017 or 2018, else both years
  are tried. Every mask found is checked against the prepared dataset: its
  resize (as the builder did it) must give the stored mask exactly, which
  also catches a mask of another year or archive.
  """

  def __init__(self, dataset: str, split: str, manual_dir: Optional[str]):
    self.dataset = dataset
    self.manual_dir = manual_dir
    self._archives = None
    config = dataset.partition("/")[2].partition(":")[0]
    self._years = tuple(y for y in YEARS if config.startswith(y)) or YEARS
    self._archive_split = "official_train" if split in PAPER_SPLITS else split

  def _mask_archives(self):
    if self._archives is None:
      from etils import epath
      from datasets.isic.isic_dataset_builder import ARCHIVES, Archive  # the builder's reader of zips and folders
      names = [ARCHIVES[y][self._archive_split][1] for y in self._years if self._archive_split in ARCHIVES[y]]
      root = epath.Path(os.path.expanduser(self.manual_dir))
      self._archives = [(a, a.members()) for a in (Archive(root, n) for n in names) if a.exists]
      if not self._archives:
        raise FileNotFoundError(f"{self.manual_dir} holds none of the ground-truth archives for split "
                                f"{self._archive_split}: expected {' or '.join(names) or 'an ISIC split'} "
                                f"(.zip or folder)")
    return self._archives

  def get(self, image_id: str, stored_mask: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
    """uint8 HxW original mask of ``image_id``; ``stored_mask`` is the dataset's SxSx1 mask."""
    size = stored_mask.shape[0]
    if tuple(original_size) == stored_mask.shape[:2] and self.manual_dir is None:
      return stored_mask[..., 0]  # stored unresized: it is the original
    if image_id.startswith(SYNTHETIC_PREFIX):
      return self._check(self._synthetic(image_id, size), stored_mask, original_size,
                         f"the synthetic generator's mask of {image_id} (seed {SYNTHETIC_SEED})")
    if self.manual_dir is None:
      raise ValueError(f"{self.dataset}: {image_id} is {original_size[1]}x{original_size[0]} originally but stored at "
                       f"{size}x{size}; the ISIC challenge protocol needs the original masks: pass manual_dir "
                       f"(--manual_dir), the folder with the ISIC archives")
    name = f"{image_id}_segmentation.png"
    mismatched = []
    for archive, members in self._mask_archives():
      if name not in members:
        continue
      try:
        with Image.open(io.BytesIO(archive.read(members[name]))) as image:
          image.load()
          mask = np.asarray(image.convert("L"), np.uint8)
      except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read {members[name]} in {archive}: {e}") from None
      if _matches(mask, stored_mask, original_size):
        return mask
      mismatched.append(str(archive))
    if mismatched:
      raise ValueError(f"{name} in {', '.join(mismatched)} is not the mask that {self.dataset} was prepared from "
                       f"(its size or content differs); is manual_dir the one the dataset was built from?")
    raise FileNotFoundError(f"{name} is in none of {', '.join(str(a) for a, _ in self._mask_archives())}")

  @staticmethod
  def _synthetic(image_id: str, size: int) -> np.ndarray:
    """Regenerates a synthetic example's native-size mask, drawn as the
    builder draws example ``index`` of split number ``n``:
    ``synthetic.generate(default_rng([seed, n, index]), size)``."""
    _, split, index = image_id.rsplit("_", 2)
    return synthetic.generate(np.random.default_rng([SYNTHETIC_SEED, PAPER_SPLITS.index(split), int(index)]),
                              size)["mask"]

  def _check(self, mask, stored_mask, original_size, what: str) -> np.ndarray:
    if not _matches(mask, stored_mask, original_size):
      raise ValueError(f"{what} is not the mask that {self.dataset} was prepared from (its size or content differs)")
    return mask


def _matches(mask: np.ndarray, stored_mask: np.ndarray, original_size: Tuple[int, int]) -> bool:
  """Whether ``mask`` is the original of ``stored_mask``: the builder's resize of it gives the stored one exactly."""
  return mask.shape == tuple(original_size) and np.array_equal(
      preprocessing.resize_mask(mask, stored_mask.shape[0]), stored_mask)


def confusion(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """[TP, FP, FN, TN] of two bool masks, as int64: original ISIC images reach
  30 M pixels, beyond float32's exact integers (the jit-side counts of
  ``metrics`` are float32)."""
  tp = np.count_nonzero(prediction & truth)
  fp = np.count_nonzero(prediction & ~truth)
  fn = np.count_nonzero(~prediction & truth)
  return np.array([tp, fp, fn, prediction.size - tp - fp - fn], np.int64)


def _batches(source, batch_size: int) -> Iterator[List[dict]]:
  for start in range(0, len(source), batch_size):
    yield [source[i] for i in range(start, min(start + batch_size, len(source)))]


def _image_id(record) -> str:
  value = record["image_id"]
  return value.decode() if isinstance(value, bytes) else str(value)


def evaluate(model, variables, dataset: str, split: str, data_dir: Optional[str] = None, *,
             protocol: str = "paper", manual_dir: Optional[str] = None, masks_dir: Optional[str] = None,
             batch_size: int = 8, threshold: float = 0.5, progress=None) -> Evaluation:
  """Evaluates (model, variables) on a prepared split.

  Args:
    dataset, split, data_dir: as ``input_pipeline.dataset_source``.
    protocol: 'paper' or 'isic_challenge' (see the module docstring).
    manual_dir: the folder of ISIC archives, for 'isic_challenge' on ISIC data.
    masks_dir: if set ('isic_challenge' only), the predicted masks are also
      written there as <image_id>_segmentation.png at the original size (the
      challenge's submission format).
    progress: optional wrapper of the iterable of batches (e.g. tqdm).
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
  if masks_dir and protocol != "isic_challenge":
    raise ValueError("masks_dir writes original-size masks: it goes with protocol='isic_challenge'")
  source = input_pipeline.dataset_source(dataset, split, data_dir)
  size = source.dataset_info.features["image"].shape[0]
  segmenter = Segmenter(model, variables, image_size=size, batch_size=batch_size, threshold=threshold)
  originals = OriginalMasks(dataset, split, manual_dir) if protocol == "isic_challenge" else None
  if masks_dir:
    os.makedirs(masks_dir, exist_ok=True)

  ids, sizes, counts = [], [], []
  batches = _batches(source, batch_size)
  for records in (progress(batches) if progress else batches):
    images = preprocessing.normalize_image(np.stack([r["image"] for r in records]))
    probs = segmenter.model_probabilities(images)
    for record, p in zip(records, probs):
      image_id = _image_id(record)
      if originals is None:
        prediction, truth = p >= threshold, preprocessing.mask_to_float(record["mask"][..., 0]) >= 0.5
      else:
        mask = originals.get(image_id, record["mask"], (int(record["original_height"]),
                                                         int(record["original_width"])))
        p = resize_probabilities(p, *mask.shape)
        prediction, truth = p >= threshold, mask > ISIC_TRUTH_LEVEL
        if masks_dir:
          Image.fromarray(binarize(p, threshold)).save(os.path.join(masks_dir, f"{image_id}_segmentation.png"))
      ids.append(image_id)
      sizes.append(prediction.shape)
      counts.append(confusion(prediction, truth))

  if not counts:
    raise ValueError(f"{dataset} {split} has no examples")
  counts = np.stack(counts)
  scores = metrics.per_image_scores(counts)
  per_image = [{"image_id": i, "height": h, "width": w, **dict(zip(("tp", "fp", "fn", "tn"), map(int, c))),
                **{k: float(scores[k][n]) for k in PER_IMAGE_NAMES}}
               for n, (i, (h, w), c) in enumerate(zip(ids, sizes, counts))]
  if protocol == "paper":
    summary = metrics.summarize(counts.sum(axis=0, dtype=np.float64))
  else:
    summary = metrics.mean_per_image_scores(counts)
  return Evaluation(protocol, dataset, split, len(ids), summary, per_image)


def predict_examples(model, variables, dataset: str, split: str, data_dir: Optional[str] = None, *,
                     num_images: int = 6, image_ids: Optional[Sequence[str]] = None,
                     batch_size: int = 8) -> Dict[str, object]:
  """A few examples of a split with the model's predictions, for Figure 3
  panels: the examples named by ``image_ids``, else ``num_images`` spread
  evenly over the split. Returns {'image': uint8 (N, S, S, 3), 'mask': float
  (N, S, S) in [0, 1], 'probs': float (N, S, S), 'image_id': [str]}."""
  source = input_pipeline.dataset_source(dataset, split, data_dir)
  if image_ids:
    index = {_image_id(source[i]): i for i in range(len(source))}
    missing = [i for i in image_ids if i not in index]
    if missing:
      raise ValueError(f"{dataset} {split} has no image {', '.join(missing)}")
    chosen = [index[i] for i in image_ids]
  else:
    if num_images < 1:
      raise ValueError(f"num_images must be positive, got {num_images}")
    chosen = sorted(set(np.linspace(0, len(source) - 1, min(num_images, len(source))).round().astype(int).tolist()))
  records = [source[i] for i in chosen]
  images = np.stack([r["image"] for r in records])
  segmenter = Segmenter(model, variables, image_size=images.shape[1], batch_size=batch_size)
  return {"image": images, "mask": np.stack([preprocessing.mask_to_float(r["mask"][..., 0]) for r in records]),
          "probs": segmenter.model_probabilities(preprocessing.normalize_image(images)),
          "image_id": [_image_id(r) for r in records]}


def write_per_image_csv(evaluation: Evaluation, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(evaluation.per_image[0]))
    writer.writeheader()
    writer.writerows(evaluation.per_image)
  return path


HEADERS = {"miou": "mIoU", "dsc": "DSC", "accuracy": "accuracy", "sensitivity": "sensitivity",
           "specificity": "specificity", "jaccard": "Jaccard", "threshold_jaccard": "thresholded Jaccard",
           "dice": "Dice"}


def format_table(evaluation: Evaluation, names: Optional[Sequence[str]] = None) -> str:
  """The metrics as a Markdown table, in %."""
  names = names or list(evaluation.metrics)
  title = "paper protocol (one confusion matrix over the split)" if evaluation.protocol == "paper" else \
      "ISIC challenge protocol (per image at original size, averaged)"
  lines = [f"{evaluation.dataset} {evaluation.split}, {evaluation.num_images} images, {title}", "",
           "| " + " | ".join(f"{HEADERS.get(k, k)} (%)" for k in names) + " |", "|" + "---:|" * len(names),
           "| " + " | ".join(f"{100 * evaluation.metrics[k]:.2f}" for k in names) + " |"]
  return "\n".join(lines)
