"""The procedural dermoscopy-like generator (aulunet_jax.synthetic)."""

import numpy as np
import pytest

from aulunet_jax import synthetic

SIZE = 96


@pytest.fixture(scope="module")
def examples():
  return [synthetic.example(seed=0, index=i, size=SIZE) for i in range(48)]


def _otsu_threshold(gray: np.ndarray) -> int:
  p = np.bincount(gray.ravel(), minlength=256) / gray.size
  w, m = np.cumsum(p), np.cumsum(p * np.arange(256))
  between = (m[-1] * w - m) ** 2 / (w * (1 - w) + 1e-12)
  return int(np.argmax(between))


def test_examples_are_deterministic_and_distinct():
  a, b = synthetic.example(3, 7, SIZE), synthetic.example(3, 7, SIZE)
  np.testing.assert_array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["mask"], b["mask"])
  assert not np.array_equal(a["image"], synthetic.example(3, 8, SIZE)["image"][:a["image"].shape[0],
                                                                                 :a["image"].shape[1]])
  assert not np.array_equal(a["mask"], synthetic.example(4, 7, SIZE)["mask"])


def test_shapes_and_value_sets(examples):
  for e in examples:
    h, w = e["mask"].shape
    assert e["image"].shape == (h, w, 3) and e["image"].dtype == np.uint8
    assert SIZE <= h <= 1.25 * SIZE + 1 and h <= w <= 1.4 * h + 1, "native size: larger than the target, landscape"
    assert set(np.unique(e["mask"])) <= {0, 255}


def test_lesions_vary_in_size_and_position(examples):
  areas = np.array([(e["mask"] > 0).mean() for e in examples])
  assert areas.min() > 0, "every image shows a lesion"
  assert areas.min() < 0.05 and areas.max() > 0.3
  touching = [e["mask"][[0, -1]].any() or e["mask"][:, [0, -1]].any() for e in examples]
  assert 0 < sum(touching) < len(examples)
  centres = np.array([np.argwhere(e["mask"]).mean(0) / e["mask"].shape for e in examples])
  assert centres.std(0).min() > 0.05


def test_lesion_is_darker_than_skin_on_average(examples):
  # The task is learnable: the lesion differs from its surroundings.
  darker = [e["image"][e["mask"] > 0].mean() < e["image"][(e["mask"] == 0) & (e["image"].mean(-1) > 20)].mean()
            for e in examples]
  assert np.mean(darker) > 0.7


def test_not_separable_by_a_global_threshold(examples):
  # Otsu's threshold on brightness (aperture pixels excluded) segments real ISIC images fairly well;
  # here the distractors (hairs, moles, redness, fall-off, faint lesions) keep it far from exact.
  ious = []
  for e in examples:
    gray = e["image"].mean(-1).astype(np.uint8)
    visible = gray > 15
    predicted = (gray <= _otsu_threshold(gray[visible])) & visible
    truth = e["mask"] > 0
    ious.append((predicted & truth).sum() / max((predicted | truth).sum(), 1))
  assert np.mean(ious) < 0.6
