"""TFDS conformance tests of the isic builder on generated fake archives.

Run with ``python -m pytest datasets/isic/isic_dataset_builder_test.py``;
tests/test_data_isic_builder.py runs them too.
"""

import atexit
import shutil
import tempfile

import tensorflow_datasets as tfds

from datasets.isic import dummy_data_generation
from datasets.isic import isic_dataset_builder

_DUMMY_DATA = tempfile.mkdtemp(prefix="isic_dummy_data_")
atexit.register(shutil.rmtree, _DUMMY_DATA, ignore_errors=True)
# 2017 as zips (with superpixel files and a metadata CSV), 2018 as extracted folders without its test pair.
dummy_data_generation.write_fake_archives(
    _DUMMY_DATA, "2017", {"official_train": 16, "official_validation": 4, "official_test": 6}, "zip")
dummy_data_generation.write_fake_archives(
    _DUMMY_DATA, "2018", {"official_train": 20, "official_validation": 3}, "folder", seed=1)


class _TfRecordFiles:
  """The TFDS checks read through tf.data, which array_record (the builder's
  default format, read with tfds.data_source) does not offer; so these
  conformance checks build TFRecord files. tests/test_data_isic_builder.py
  checks the array_record builds."""

  def _make_builder(self, config=None):
    return self.dataset_class(data_dir=self.tmp_dir, config=config, version=self.VERSION, file_format="tfrecord")


class Isic2017Test(_TfRecordFiles, tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = isic_dataset_builder.Builder
  EXAMPLE_DIR = _DUMMY_DATA
  BUILDER_CONFIG_NAMES_TO_TEST = [isic_dataset_builder.IsicConfig(name="2017_16", source="2017", image_size=16)]
  # 16 training images: 16 * 5 // 8 = 10 train, 16 * 3 // 40 = 1 validation, 5 test (as 1250 / 150 / 600 of 2000).
  SPLITS = {"train": 10, "validation": 1, "test": 5, "official_train": 16, "official_validation": 4,
            "official_test": 6}
  OVERLAPPING_SPLITS = ["official_train"]  # the paper splits are cut from it


class Isic2018Test(_TfRecordFiles, tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = isic_dataset_builder.Builder
  EXAMPLE_DIR = _DUMMY_DATA
  BUILDER_CONFIG_NAMES_TO_TEST = [isic_dataset_builder.IsicConfig(name="2018_16", source="2018", image_size=16)]
  # 20 training images: 14 / 2 / 4 (as 1815 / 259 / 520 of 2594); no test archive, so no official_test.
  SPLITS = {"train": 14, "validation": 2, "test": 4, "official_train": 20, "official_validation": 3}
  OVERLAPPING_SPLITS = ["official_train"]  # the paper splits are cut from it


class IsicSyntheticTest(_TfRecordFiles, tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = isic_dataset_builder.Builder
  EXAMPLE_DIR = _DUMMY_DATA
  BUILDER_CONFIG_NAMES_TO_TEST = [isic_dataset_builder.IsicConfig(
      name="synthetic_32", source="synthetic", image_size=32, synthetic_examples=(6, 2, 3))]
  SPLITS = {"train": 6, "validation": 2, "test": 3}


if __name__ == "__main__":
  tfds.testing.test_main()
