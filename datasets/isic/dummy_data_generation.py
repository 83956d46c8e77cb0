"""Writes small fake ISIC challenge archives for the builder's tests.

The archives have the layout of the real ones: a top folder named like the
archive holding ISIC_NNNNNNN.jpg images (plus, for 2017,
ISIC_NNNNNNN_superpixels.png files and a metadata CSV; for 2018, licence and
attribution texts) and ISIC_NNNNNNN_segmentation.png masks. Image ids are
random and written in shuffled order, so a test can tell id order from
archive order. Images are tiny JPEGs of varied sizes, so thousands of them
take a second.
"""

import io
import zipfile
from typing import Dict, List, Mapping, Optional

from etils import epath
import numpy as np
from PIL import Image

from datasets.isic import isic_dataset_builder


def _encode(array: np.ndarray, fmt: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
  return buffer.getvalue()


def fake_pair(rng: np.random.Generator, max_side: int = 12):
  """(uint8 HxWx3 image, uint8 HxW mask in {0, 255}) of a random size up to ``max_side``."""
  h, w = rng.integers(max(2, max_side * 2 // 3), max_side + 1, size=2)
  yy, xx = np.mgrid[:h, :w]
  cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.2, 0.45) * min(h, w)
  mask = (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).astype(np.uint8) * 255
  image = rng.integers(120, 230, (h, w, 3)).astype(np.uint8)
  image[mask > 0] //= 3
  return image, mask


def write_archive_files(files: Mapping[str, bytes], manual_dir: epath.PathLike, name: str, form: str) -> None:
  """Writes {file name: bytes} as ``<name>.zip`` (top folder ``name/``) or as the folder ``<name>/``."""
  manual_dir = epath.Path(manual_dir)
  manual_dir.mkdir(parents=True, exist_ok=True)
  if form == "zip":
    with zipfile.ZipFile(manual_dir / f"{name}.zip", "w") as archive:
      for file_name, data in files.items():
        archive.writestr(f"{name}/{file_name}", data)
  elif form == "folder":
    (manual_dir / name).mkdir(exist_ok=True)
    for file_name, data in files.items():
      (manual_dir / name / file_name).write_bytes(data)
  else:
    raise ValueError(f"form must be 'zip' or 'folder', got {form!r}")


def write_fake_archives(manual_dir: epath.PathLike, year: str, counts: Mapping[str, int], form: str = "zip",
                        seed: int = 0, max_side: int = 12, side_files: bool = True,
                        ids: Optional[Mapping[str, List[str]]] = None) -> Dict[str, List[str]]:
  """Writes the archives of ``year`` for the official splits in ``counts``.

  counts: {'official_train': n, 'official_validation': n, 'official_test': n}
    (any subset). ids: optional image ids per split instead of random ones.
  Returns {split: image ids, sorted}.
  """
  rng = np.random.default_rng(seed)
  total = sum(counts.values())
  numbers = rng.choice(10 ** 7, size=total, replace=False)
  written, start = {}, 0
  for split, count in counts.items():
    split_ids = list(ids[split]) if ids else [f"ISIC_{n:07d}" for n in numbers[start:start + count]]
    start += count
    rng.shuffle(split_ids)
    images, masks = {}, {}
    for image_id in split_ids:
      image, mask = fake_pair(rng, max_side)
      images[f"{image_id}.jpg"] = _encode(image, "JPEG")
      masks[f"{image_id}_segmentation.png"] = _encode(mask, "PNG")
      if side_files and year == "2017":
        images[f"{image_id}_superpixels.png"] = _encode(rng.integers(0, 255, image.shape, dtype=np.uint8), "PNG")
    images_name, masks_name = isic_dataset_builder.ARCHIVES[year][split]
    if side_files:
      if year == "2017":
        images[f"{images_name}_metadata.csv"] = b"image_id,age_approximate,sex\n" + b"".join(
            f"{i},55,female\n".encode() for i in split_ids)
      else:
        images["LICENSE.txt"] = masks["LICENSE.txt"] = b"CC-BY-NC\n"
        images["ATTRIBUTION.txt"] = b"ISIC\n"
    write_archive_files(images, manual_dir, images_name, form)
    write_archive_files(masks, manual_dir, masks_name, form)
    written[split] = sorted(split_ids)
  return written

