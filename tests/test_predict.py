import io
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import aulunet_jax
from aulunet_jax import checkpoints, predict, preprocessing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64


def _variables(model):
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3)), train=False)
  # Spread the head's bias so that thresholding splits the image into both classes.
  params = jax.tree_util.tree_map(lambda x: x, variables["params"])
  params["head"]["kernel"] = params["head"]["kernel"] * 20
  return {**variables, "params": params}


@pytest.fixture(scope="module")
def model_and_variables():
  model = aulunet_jax.AULUNet()
  return model, _variables(model)


@pytest.fixture(scope="module")
def segmenter(model_and_variables):
  return predict.Segmenter(*model_and_variables, image_size=SIZE, batch_size=4)


def test_forward_matches_the_model(model_and_variables):
  """The library's compiled forward pass (with its compiler options) gives
  the model's own output."""
  model, variables = model_and_variables
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, SIZE, SIZE, 3), maxval=255.0)
  plain = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  np.testing.assert_allclose(predict.forward(model, variables, images), plain, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def checkpoint(model_and_variables, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("ckpt") / "model")
  return checkpoints.save_inference_checkpoint(path, model_and_variables[1], checkpoints.model_spec("aulunet_v3"))


def _lesion_image(h, w, seed=0):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  lesion = ((yy - h * 0.45) / (h * 0.3)) ** 2 + ((xx - w * 0.55) / (w * 0.25)) ** 2 < 1
  image = np.full((h, w, 3), (200, 160, 140), np.float64)
  image[lesion] = (90, 60, 50)
  return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def test_probabilities_follow_the_training_preprocessing(model_and_variables, segmenter):
  model, variables = model_and_variables
  image = _lesion_image(90, 130)
  probs = segmenter.probabilities(image)
  assert probs.shape == (90, 130) and probs.dtype == np.float32
  x = preprocessing.normalize_image(preprocessing.resize_image(image, SIZE))
  expected = np.asarray(model.apply(variables, x[None], train=False))[0, ..., 0]
  expected = np.asarray(Image.fromarray(expected).resize((130, 90), Image.BILINEAR))
  np.testing.assert_allclose(probs, expected, atol=1e-5)
  mask = segmenter.segment(image)
  assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
  np.testing.assert_array_equal(mask == 255, probs > 0.5)
  assert 0 < (mask == 255).mean() < 1


def test_batches_of_mixed_sizes_and_types_give_each_image_its_own_answer(segmenter):
  images = [_lesion_image(64, 64, i) for i in range(3)] + [_lesion_image(200, 100, 3)]
  one_by_one = [segmenter.probabilities(im) for im in images]
  together = segmenter.probabilities(images)  # 4 images: a full batch, then one padded batch in a 5th
  together += segmenter.probabilities(images[:1])
  for a, b in zip(one_by_one, together):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # Non-uint8 arrays are min-max scaled to 0..255: exact for an image that spans the full range.
  full = images[0].copy()
  full[0, 0], full[0, 1] = 0, 255
  reference = segmenter.probabilities(full)
  rgba = np.concatenate([full, np.full((64, 64, 1), 7, np.uint8)], axis=-1)
  for variant in (rgba, full.astype(np.float32) / 255, full.astype(np.uint16) * 257):
    np.testing.assert_allclose(segmenter.probabilities(variant), reference, atol=1e-6)
  grey = full[..., 0]
  np.testing.assert_allclose(segmenter.probabilities(grey.astype(np.uint16) * 257),
                             segmenter.probabilities(np.repeat(grey[..., None], 3, axis=-1)), atol=1e-6)
  batch4d = np.stack(images[:3])
  assert len(segmenter.segment(batch4d)) == 3


def test_bad_arrays_are_named():
  with pytest.raises(ValueError, match="HxW, HxWx1, HxWx3 or HxWx4"):
    predict.to_rgb_uint8(np.zeros((4, 4, 2)))
  with pytest.raises(ValueError, match="NaN"):
    predict.to_rgb_uint8(np.full((4, 4), np.nan))


def _write_inputs(directory):
  """One image per supported format and mode, an EXIF-rotated JPEG and two broken files."""
  os.makedirs(directory)
  base = _lesion_image(48, 80)
  Image.fromarray(base).save(os.path.join(directory, "a_rgb.jpg"), quality=95)
  Image.fromarray(base).save(os.path.join(directory, "b_rgb.bmp"))
  Image.fromarray(np.concatenate([base, np.full((48, 80, 1), 255, np.uint8)], -1)).save(
      os.path.join(directory, "c_rgba.png"))
  Image.fromarray(base[..., 0]).save(os.path.join(directory, "d_grey.tif"))
  Image.fromarray(base[..., 0].astype(np.uint16) * 257).save(os.path.join(directory, "e_grey16.png"))
  exif = Image.Exif()
  exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
  Image.fromarray(base).save(os.path.join(directory, "f_exif.JPG"), exif=exif, quality=95)
  with open(os.path.join(directory, "g_corrupt.jpg"), "wb") as f:
    f.write(b"not an image at all")
  buf = io.BytesIO()
  Image.fromarray(base).save(buf, format="PNG")
  with open(os.path.join(directory, "h_truncated.png"), "wb") as f:
    f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
  with open(os.path.join(directory, "notes.txt"), "w") as f:
    f.write("not an image")
  return base


def test_read_image_honours_exif_and_modes(tmp_path):
  base = _write_inputs(str(tmp_path / "in"))
  upright = predict.read_image(str(tmp_path / "in" / "f_exif.JPG"))
  assert upright.shape == (80, 48, 3)
  # Orientation 6: the stored image is shown rotated 90 degrees clockwise.
  stored = predict.read_image(str(tmp_path / "in" / "a_rgb.jpg")).astype(int)
  assert np.abs(np.rot90(stored, k=-1) - upright.astype(int)).mean() < 3
  np.testing.assert_array_equal(predict.read_image(str(tmp_path / "in" / "b_rgb.bmp")), base)
  np.testing.assert_array_equal(predict.read_image(str(tmp_path / "in" / "c_rgba.png")), base)
  grey16 = predict.read_image(str(tmp_path / "in" / "e_grey16.png"))
  assert grey16.shape == (48, 80, 3) and grey16.dtype == np.uint8 and grey16.max() == 255
  for broken in ("g_corrupt.jpg", "h_truncated.png"):
    with pytest.raises(predict.UnreadableImageError, match=broken):
      predict.read_image(str(tmp_path / "in" / broken))


def test_predict_files_writes_isic_masks_and_reports_failures(segmenter, tmp_path):
  _write_inputs(str(tmp_path / "in"))
  paths, passed_over = predict.find_images([str(tmp_path / "in")])
  assert len(paths) == 8 and len(passed_over) == 1 and "notes.txt" in passed_over[0]
  out = str(tmp_path / "out")
  report = predict.predict_files(segmenter, paths, out, overlays=True, probability_maps=True)
  assert len(report.failed) == 2 and "g_corrupt.jpg" in report.failed[0] and "h_truncated.png" in report.failed[1]
  assert len(report.written) == 6 * 3
  for stem in ("a_rgb", "b_rgb", "c_rgba", "d_grey", "e_grey16", "f_exif"):
    mask = np.asarray(Image.open(os.path.join(out, f"{stem}_segmentation.png")))
    assert mask.shape == ((80, 48) if stem == "f_exif" else (48, 80))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert np.asarray(Image.open(os.path.join(out, f"{stem}_overlay.png"))).shape == mask.shape + (3,)
    assert np.asarray(Image.open(os.path.join(out, f"{stem}_probability.png"))).shape == mask.shape
  # The outputs are now inputs' neighbours: searching the output directory passes them all over.
  assert predict.find_images([out])[0] == []
  with pytest.raises(FileExistsError, match="a_rgb_segmentation.png exists .and 17 more.; pass overwrite"):
    predict.predict_files(segmenter, paths, out, overlays=True, probability_maps=True)


def test_predict_command(checkpoint, tmp_path):
  _write_inputs(str(tmp_path / "in"))
  out = str(tmp_path / "out")
  cmd = [sys.executable, "-m", "launch.predict", f"--checkpoint={checkpoint}", f"--input={tmp_path / 'in'}",
         f"--output={out}", f"--image_size={SIZE}", "--batch_size=4"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr
  assert "segmented 6 of 8 images" in proc.stdout
  assert "FAILED" in proc.stderr and "g_corrupt.jpg" in proc.stderr and "h_truncated.png" in proc.stderr
  assert sorted(os.listdir(out)) == sorted(f"{s}_segmentation.png" for s in
                                           ("a_rgb", "b_rgb", "c_rgba", "d_grey", "e_grey16", "f_exif"))
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert again.returncode != 0 and "exists" in again.stderr and "--overwrite" in again.stderr
  one = str(tmp_path / "in" / "a_rgb.jpg")
  proc = subprocess.run(cmd[:4] + [f"--input={one}", f"--output={out}", f"--image_size={SIZE}", "--overwrite"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "segmented 1 of 1 images" in proc.stdout
