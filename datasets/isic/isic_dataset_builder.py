"""isic: ISIC 2017 / 2018 lesion segmentation, and a synthetic stand-in.

Every config yields the paper's splits ``train`` / ``validation`` / ``test``.
For 2017 and 2018 they are cut from the official training archive as the
reference did (UltraLight-VM-UNet's ``prepare_ISIC2017/2018.py``), but in
ISIC id order instead of the reference's filesystem glob order, which no one
can reproduce. The official challenge splits come as ``official_train`` /
``official_validation`` / ``official_test`` for the archives present.

Images and masks are resized like the reference (``scipy.misc.imresize`` with
``interp='bilinear'``, i.e. PIL's bilinear filter) and stored losslessly as
PNG; masks keep the soft 0-255 values that bilinear resizing gives.
"""

import collections
import concurrent.futures
import dataclasses
import functools
import io
import multiprocessing
import os
import re
import zipfile
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from aulunet_jax import preprocessing
from aulunet_jax import synthetic

PAPER_SPLITS = ("train", "validation", "test")

# Official archives per year and split: (images, masks), each a <name>.zip or an extracted folder <name>/.
ARCHIVES = {
    "2017": {
        "official_train": ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"),
        "official_validation": ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth"),
        "official_test": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
    },
    "2018": {
        "official_train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
        "official_validation": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
        "official_test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
    },
}
REQUIRED_SPLIT = "official_train"

# The reference's cuts of the official training set, as fractions (train, validation); test takes the rest.
# 2017: 1250 / 150 / 600 of 2000 images; 2018: 1815 / 259 / 520 of 2594.
PAPER_SPLIT_FRACTIONS = {"2017": ((5, 8), (3, 40)), "2018": ((7, 10), (1, 10))}

_IMAGE_RE = re.compile(r"^(ISIC_\d+)\.jpg$")
_MASK_RE = re.compile(r"^(ISIC_\d+)_segmentation\.png$")
_SUPERPIXELS_RE = re.compile(r"^ISIC_\d+_superpixels\.png$")
_SIDE_FILES = (".csv", ".txt")  # metadata, licence and attribution files shipped in the archives

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
The ISIC challenge archives need a browser: download them from
https://challenge.isic-archive.com/data/ (sections "2017" and "2018") and put
them, as the .zip files or as the folders they extract to, in manual_dir
(default: <data_dir>/downloads/manual; or pass --manual_dir).

isic/2017 (training pair required; each other pair optional):
  ISIC-2017_Training_Data.zip            ISIC-2017_Training_Part1_GroundTruth.zip
  ISIC-2017_Validation_Data.zip          ISIC-2017_Validation_Part1_GroundTruth.zip
  ISIC-2017_Test_v2_Data.zip             ISIC-2017_Test_v2_Part1_GroundTruth.zip

isic/2018 (training pair required; each other pair optional):
  ISIC2018_Task1-2_Training_Input.zip    ISIC2018_Task1_Training_GroundTruth.zip
  ISIC2018_Task1-2_Validation_Input.zip  ISIC2018_Task1_Validation_GroundTruth.zip
  ISIC2018_Task1-2_Test_Input.zip        ISIC2018_Task1_Test_GroundTruth.zip

isic/synthetic needs nothing.
"""


@dataclasses.dataclass(eq=False)
class IsicConfig(tfds.core.BuilderConfig):
  """A config: ``source`` is '2017', '2018' or 'synthetic'.

  ``image_size`` is the side of the stored square images and masks.
  ``synthetic_examples`` (train, validation, test) and ``seed`` only concern
  the synthetic source. A config with other values needs its own ``name``,
  e.g. ``--config='{"name": "synthetic_64", "source": "synthetic",
  "image_size": 64}'``.
  """
  source: str = "synthetic"
  image_size: int = 256
  synthetic_examples: Sequence[int] = (400, 100, 100)
  seed: int = 0

  def __post_init__(self):
    if self.source not in ("2017", "2018", "synthetic"):
      raise ValueError(f"IsicConfig.source must be '2017', '2018' or 'synthetic', got {self.source!r}")
    if self.image_size < 1:
      raise ValueError(f"IsicConfig.image_size must be positive, got {self.image_size}")
    self.synthetic_examples = tuple(int(n) for n in self.synthetic_examples)
    if len(self.synthetic_examples) != 3 or min(self.synthetic_examples) < 1:
      raise ValueError(f"IsicConfig.synthetic_examples must be 3 positive counts (train, validation, test), "
                       f"got {self.synthetic_examples}")


def _id_order(image_id: str) -> Tuple[int, str]:
  return int(image_id.split("_")[1]), image_id


def paper_splits(image_ids: Iterable[str], year: str) -> Dict[str, List[str]]:
  """The reference's train / validation / test cut of an official training set, in ISIC id order."""
  ids = sorted(image_ids, key=_id_order)
  (a, b), (c, d) = PAPER_SPLIT_FRACTIONS[year]
  n_train, n_validation = len(ids) * a // b, len(ids) * c // d
  return {"train": ids[:n_train], "validation": ids[n_train:n_train + n_validation],
          "test": ids[n_train + n_validation:]}


class Archive:
  """An ISIC archive in manual_dir: ``<name>.zip`` or the extracted folder ``<name>/``.

  Members are found by file name anywhere inside (archives nest them in a
  top folder). When both forms are present the zip is read: it is complete
  by construction, while a folder may be a partial extraction.
  """

  def __init__(self, manual_dir: epath.Path, name: str):
    self.name = name
    self.zip_path = manual_dir / f"{name}.zip"
    self.folder = manual_dir / name
    self.exists = self.zip_path.exists() or self.folder.is_dir()
    self._zip = None

  def __str__(self):
    return os.fspath(self.zip_path if self.zip_path.exists() else self.folder)

  def members(self) -> Dict[str, str]:
    """{file name: location inside the archive}, without directories and hidden files."""
    if self.zip_path.exists():
      if self.folder.is_dir():
        logging.info("isic: both %s and %s exist; reading the zip", self.zip_path, self.folder)
      try:
        self._zip = zipfile.ZipFile(self.zip_path.open("rb"))
      except zipfile.BadZipFile as e:
        raise ValueError(f"{self.zip_path} is not a readable zip archive: {e}") from e
      locations = [info.filename for info in self._zip.infolist() if not info.is_dir()]
    else:
      locations = [os.fspath(p.relative_to(self.folder)) for p in _files_under(self.folder)]
    members = {}
    for location in locations:
      parts = location.replace("\\", "/").split("/")
      if parts[0] == "__MACOSX" or parts[-1].startswith("."):
        continue
      if parts[-1] in members:
        raise ValueError(f"{self}: the file name {parts[-1]} occurs twice ({members[parts[-1]]} and {location})")
      members[parts[-1]] = location
    return members

  def read(self, location: str) -> bytes:
    if self._zip is not None:
      return self._zip.read(location)
    return (self.folder / location).read_bytes()


def _files_under(folder: epath.Path) -> Iterator[epath.Path]:
  for path in folder.iterdir():  # epath has no recursive glob on every backend
    if path.is_dir():
      yield from _files_under(path)
    else:
      yield path


def _index(archive: Archive, pattern: re.Pattern, skipped: Tuple[re.Pattern, ...], expected: str) -> Dict[str, str]:
  """{ISIC id: location} of the files matching ``pattern``; anything unexpected is an error."""
  found, side = {}, collections.Counter()
  for name, location in archive.members().items():
    if match := pattern.match(name):
      found[match.group(1)] = location
    elif any(p.match(name) for p in skipped) or name.lower().endswith(_SIDE_FILES):
      side[os.path.splitext(name)[1]] += 1
    else:
      raise ValueError(f"{archive}: unexpected file {name}; expected {expected}")
  if not found:
    raise ValueError(f"{archive} holds no {expected}")
  if side:
    logging.info("isic: %s: skipped %s", archive, dict(side))
  return found


def _pairs(manual_dir: epath.Path, images_name: str, masks_name: str) -> List[Tuple[str, Archive, str, Archive, str]]:
  """[(id, image archive, image location, mask archive, mask location)] sorted by ISIC id."""
  images, masks = Archive(manual_dir, images_name), Archive(manual_dir, masks_name)
  for archive in (images, masks):
    if not archive.exists:
      raise FileNotFoundError(f"Missing archive {archive.name}: expected {archive.zip_path} or the folder "
                              f"{archive.folder}/.\n{_MANUAL_DOWNLOAD_INSTRUCTIONS}")
  image_files = _index(images, _IMAGE_RE, (_SUPERPIXELS_RE,), "images ISIC_NNNNNNN.jpg")
  mask_files = _index(masks, _MASK_RE, (), "masks ISIC_NNNNNNN_segmentation.png")
  problems = [f"{masks}: {i}_segmentation.png has no image {i}.jpg in {images}"
              for i in sorted(mask_files.keys() - image_files.keys())]
  problems += [f"{images}: {i}.jpg has no mask {i}_segmentation.png in {masks}"
               for i in sorted(image_files.keys() - mask_files.keys())]
  if problems:
    more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
    raise ValueError("Unpaired files:\n" + "\n".join(problems[:20]) + more)
  ids = sorted(image_files, key=_id_order)
  return [(i, images, image_files[i], masks, mask_files[i]) for i in ids]


def _decode(data: bytes, name: str, mode: str) -> np.ndarray:
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      return np.asarray(image.convert(mode), np.uint8)
  except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for truncated / corrupt files
    raise ValueError(f"Cannot read {name}: expected a complete {'RGB image' if mode == 'RGB' else 'mask'} ({e})") \
        from e


def _example(image_id: str, image: np.ndarray, mask: np.ndarray, size: int) -> dict:
  return {"image": preprocessing.resize_image(image, size), "mask": preprocessing.resize_mask(mask, size),
          "image_id": image_id, "original_height": image.shape[0], "original_width": image.shape[1]}


def _decode_pair(image_id: str, image_bytes: bytes, image_name: str, mask_bytes: bytes, mask_name: str,
                 size: int) -> dict:
  image = _decode(image_bytes, image_name, "RGB")
  mask = _decode(mask_bytes, mask_name, "L")
  if mask.shape != image.shape[:2]:
    raise ValueError(f"{mask_name} is {mask.shape[1]}x{mask.shape[0]} but its image {image_name} is "
                     f"{image.shape[1]}x{image.shape[0]}; expected the same size")
  return _example(image_id, image, mask, size)


def ordered_map(fn: Callable, items: Iterable, workers: Optional[int] = None) -> Iterator:
  """``map(fn, items)`` on a thread pool, in order, with a bounded look-ahead.

  PIL and numpy release the GIL while decoding, resizing and drawing, so
  threads run in parallel without copying images between processes.
  """
  workers = workers or multiprocessing.cpu_count()
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= 2 * workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


class Builder(tfds.core.GeneratorBasedBuilder):
  """ISIC 2017 / 2018 skin-lesion segmentation, and a synthetic stand-in."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Paper splits in ISIC id order, official splits, synthetic config."}
  BUILDER_CONFIGS = [
      IsicConfig(name="2017", source="2017", description="ISIC 2017 Part 1 (lesion segmentation)."),
      IsicConfig(name="2018", source="2018", description="ISIC 2018 Task 1 (lesion boundary segmentation)."),
      IsicConfig(name="synthetic", source="synthetic",
                 description="Procedural dermoscopy-like images with exact masks; no download."),
  ]
  DEFAULT_CONFIG_NAME = "synthetic"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS

  def __init__(self, *, file_format=None, **kwargs):
    # array_record by default: grain reads it with random access through tfds.data_source.
    super().__init__(file_format=file_format or tfds.core.FileFormat.ARRAY_RECORD, **kwargs)
    self._pairs_found = {}

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "mask": tfds.features.Image(shape=(size, size, 1), encoding_format="png",
                                        doc="Lesion mask 0-255, soft at the border (bilinear resize)."),
            "image_id": tfds.features.Text(),
            "original_height": tfds.features.Scalar(np.int32),
            "original_width": tfds.features.Scalar(np.int32),
        }),
        supervised_keys=("image", "mask"),
        homepage="https://challenge.isic-archive.com/data/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    if config.source == "synthetic":
      self._pairs_found = dict(zip(PAPER_SPLITS, config.synthetic_examples))
      return {split: self._generate_examples(functools.partial(self._synthetic_example, number), range(count))
              for number, (split, count) in enumerate(self._pairs_found.items())}

    manual_dir = dl_manager.manual_dir
    official = {}
    for split, (images_name, masks_name) in ARCHIVES[config.source].items():
      present = [Archive(manual_dir, name).exists for name in (images_name, masks_name)]
      if split == REQUIRED_SPLIT or any(present):
        official[split] = _pairs(manual_dir, images_name, masks_name)
    by_id = {pair[0]: pair for pair in official[REQUIRED_SPLIT]}
    splits = {split: [by_id[i] for i in ids] for split, ids in paper_splits(by_id, config.source).items()}
    if not all(splits.values()):
      raise ValueError(f"{Archive(manual_dir, ARCHIVES[config.source][REQUIRED_SPLIT][0])} holds only {len(by_id)} "
                       f"image pairs: too few to cut the paper's train / validation / test splits")
    splits.update(official)
    self._pairs_found = {split: len(pairs) for split, pairs in splits.items()}
    logging.info("isic/%s: pairs per split %s", config.name, self._pairs_found)
    return {split: self._generate_examples(self._archive_example, pairs) for split, pairs in splits.items()}

  def _generate_examples(self, make_example: Callable[..., dict], items: Sequence):
    """Yields (image_id, example) for ``make_example(item)``, several items at a time."""
    for example in ordered_map(make_example, items):
      yield example["image_id"], example

  def _archive_example(self, pair) -> dict:
    image_id, images, image_location, masks, mask_location = pair
    return _decode_pair(image_id, images.read(image_location), f"{image_location} in {images}",
                        masks.read(mask_location), f"{mask_location} in {masks}", self.builder_config.image_size)

  def _synthetic_example(self, split_number: int, index: int) -> dict:
    config = self.builder_config
    drawn = synthetic.generate(np.random.default_rng([config.seed, split_number, index]), config.image_size)
    return _example(f"synthetic_{PAPER_SPLITS[split_number]}_{index:05d}", drawn["image"], drawn["mask"],
                    config.image_size)

  def _download_and_prepare(self, dl_manager, download_config):
    super()._download_and_prepare(dl_manager, download_config)
    if download_config.max_examples_per_split is not None:
      return
    written = {name: info.num_examples for name, info in self.info.splits.items()}
    if written != self._pairs_found:
      raise RuntimeError(f"isic/{self.builder_config.name}: wrote {written} examples per split, but found "
                         f"{self._pairs_found} pairs")
