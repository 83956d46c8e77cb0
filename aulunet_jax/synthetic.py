"""Procedural dermoscopy-like images with exact lesion masks.

The ISIC archives need a browser and a licence click, so the project embeds a
generator that tests, demos and smoke runs use instead. Each image shows one
irregular lesion on skin, with what makes real dermoscopy hard to segment:
skin tones from light to dark with uneven redness, illumination fall-off,
the dermoscope's black circular aperture, lesions of any size and position
(sometimes cut by the image edge), two-lobed shapes, colour mixtures (light
and dark brown, black, blue-grey, red, white regression), pigment network and
globules, sharp and very fuzzy borders, low-contrast lesions, unlabelled
small moles, hairs, air bubbles, ruler marks and purple ink marks, blur and
sensor noise.

The mask is exact: a pixel belongs to the lesion where the lesion's opacity
is above one half and the pixel is not hidden by the aperture. Hairs, bubbles
and marks lie on top of the lesion without changing the mask, as in the ISIC
annotations. Images come at a "native" size a little larger than the target
and wider than tall, as real dermoscopy does, so that the dataset builder
resizes them exactly like real archives (bilinear, soft mask borders).

Everything is drawn from one ``numpy.random.Generator``; ``example(seed,
index, size)`` is a pure function of its arguments.
"""

import math
from typing import Dict, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Skin tones (RGB), light to dark.
_SKIN_TONES = np.array([[236, 200, 182], [224, 178, 150], [205, 150, 120], [170, 118, 88], [128, 86, 62],
                        [96, 64, 48]], np.float32)
# Lesion pigments: light brown, dark brown, black-brown, blue-grey, red, white (regression).
_PIGMENTS = np.array([[168, 112, 72], [110, 62, 36], [54, 34, 28], [92, 96, 118], [176, 84, 86],
                      [206, 186, 176]], np.float32)
_PIGMENT_WEIGHTS = np.array([0.3, 0.3, 0.15, 0.1, 0.1, 0.05])


def native_size(rng: np.random.Generator, size: int) -> Tuple[int, int]:
  """(height, width) of an image before resizing: 1-1.25x the target, landscape."""
  height = int(round(size * rng.uniform(1.0, 1.25)))
  return height, int(round(height * rng.uniform(1.0, 1.4)))


def smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], cells: int, octaves: int = 3) -> np.ndarray:
  """Fractal value noise with unit standard deviation, ``cells`` blobs across."""
  h, w = shape
  total = np.zeros(shape, np.float32)
  for octave in range(octaves):
    n = cells * 2 ** octave + 1
    grid = rng.standard_normal((n, n)).astype(np.float32)
    total += np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC)) * 0.5 ** octave
  return (total - total.mean()) / (total.std() + 1e-6)


def _smoothstep(x: np.ndarray) -> np.ndarray:
  x = np.clip(x, 0.0, 1.0)
  return x * x * (3.0 - 2.0 * x)


def _lesion_field(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
  """Normalised distance d: the lesion is d < 1 (irregular, warped, maybe two lobes)."""
  h, w = shape
  short = min(h, w)
  if rng.random() < 0.15:  # off-centre, often cut by the image edge
    cy, cx = rng.uniform(0.0, 1.0) * h, rng.uniform(0.0, 1.0) * w
  else:
    cy, cx = np.clip(rng.normal(0.5, 0.12, 2), 0.2, 0.8) * (h, w)
  radius = short * math.exp(rng.uniform(math.log(0.06), math.log(0.38)))

  def lobe(cy, cx, radius):
    angle = rng.uniform(0, math.pi)
    stretch = rng.uniform(1.0, 1.6)
    dy, dx = yy - cy, xx - cx
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / stretch
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    rho = np.sqrt(u * u + v * v)
    direction = (u + 1j * v) / np.maximum(rho, 1e-6)  # e^{i theta}
    harmonic = direction * direction
    outline = np.ones_like(rho)
    for k in range(2, 9):  # outline(theta) = 1 + sum_k a_k cos(k theta + phi_k)
      phase = complex(np.exp(1j * rng.uniform(0, 2 * math.pi)))
      outline += np.float32(rng.uniform(0.0, 0.22 / k ** 0.7)) * (harmonic * phase).real
      harmonic = harmonic * direction
    return rho / (radius * np.maximum(outline, 0.35))

  d = lobe(cy, cx, radius)
  if rng.random() < 0.2:  # a second, overlapping lobe
    offset = rng.uniform(0.5, 0.9) * radius
    phi = rng.uniform(0, 2 * math.pi)
    d = np.minimum(d, lobe(cy + offset * math.sin(phi), cx + offset * math.cos(phi), radius * rng.uniform(0.5, 0.9)))
  return d + rng.uniform(0.05, 0.3) * smooth_noise(rng, shape, cells=int(rng.integers(4, 9)))


def _skin(rng: np.random.Generator, shape: Tuple[int, int]) -> np.ndarray:
  tone = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.08, 3)
  skin = np.broadcast_to(tone, shape + (3,)).astype(np.float32)
  skin = skin * (1.0 + 0.06 * smooth_noise(rng, shape, cells=3)[..., None])
  redness = _smoothstep(smooth_noise(rng, shape, cells=4) * 0.6 - rng.uniform(-0.2, 0.8))[..., None]
  skin = skin + redness * rng.uniform(0.0, 0.5) * (np.array([200, 90, 90], np.float32) - skin)
  return skin + 3.0 * smooth_noise(rng, shape, cells=max(shape) // 6, octaves=1)[..., None]


def _lesion_colour(rng: np.random.Generator, d: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
  count = int(rng.integers(1, 5))
  chosen = rng.choice(len(_PIGMENTS), size=count, replace=False, p=_PIGMENT_WEIGHTS)
  logits = np.stack([smooth_noise(rng, shape, cells=int(rng.integers(2, 6))) for _ in chosen], -1)
  weights = np.exp(rng.uniform(1.0, 4.0) * logits)
  palette = (_PIGMENTS[chosen] * rng.uniform(0.85, 1.15, (count, 3))).astype(np.float32)
  colour = (weights / weights.sum(-1, keepdims=True)) @ palette
  colour *= 1.0 - rng.uniform(0.0, 0.45) * np.clip(1.0 - d, 0.0, 1.0)[..., None]  # darker centre
  if rng.random() < 0.35:  # pigment network: a warped grid of darker lines
    period = rng.uniform(5.0, 12.0) * shape[0] / 256
    warp = 4.0 * smooth_noise(rng, shape, cells=6)
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float32)
    grid = np.cos(2 * math.pi * (xx + warp) / period) + np.cos(2 * math.pi * (yy - warp) / period)
    colour *= 1.0 - rng.uniform(0.1, 0.35) * _smoothstep(grid - 0.6)[..., None]
  return colour


def _draw_layer(shape: Tuple[int, int], draw_fn, blur: float) -> np.ndarray:
  """An opacity layer in [0, 1] drawn with PIL, slightly blurred (anti-aliasing)."""
  layer = Image.new("L", (shape[1], shape[0]), 0)
  draw_fn(ImageDraw.Draw(layer))
  if blur > 0:
    layer = layer.filter(ImageFilter.GaussianBlur(blur))
  return np.asarray(layer, np.float32)[..., None] / 255.0


def _blend(image: np.ndarray, layer: np.ndarray, colour) -> np.ndarray:
  return image + layer * (np.asarray(colour, np.float32) - image)


def _globules(rng, d, shape):
  inside = np.argwhere(d < 0.85)
  if len(inside) == 0:
    return None
  picks = inside[rng.integers(len(inside), size=int(rng.integers(5, 30)))]
  scale = shape[0] / 256

  def draw(canvas):
    for y, x in picks:
      r = rng.uniform(1.0, 3.5) * scale
      canvas.ellipse([x - r, y - r, x + r, y + r], fill=255)
  return _draw_layer(shape, draw, blur=0.6)


def _moles(rng, d, shape):
  """Small unlabelled moles away from the lesion."""
  h, w = shape
  scale = min(h, w)

  def draw(canvas):
    for _ in range(int(rng.integers(1, 4))):
      for _ in range(20):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        if d[int(y), int(x)] > 1.6:
          break
      r = rng.uniform(0.012, 0.035) * scale
      canvas.ellipse([x - r, y - r * rng.uniform(0.7, 1.3), x + r, y + r], fill=255)
  return _draw_layer(shape, draw, blur=rng.uniform(0.5, 2.0))


def _hairs(rng, shape):
  h, w = shape
  scale = h / 256

  def draw(canvas):
    for _ in range(int(rng.integers(1, 15))):
      start = np.array([rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h])
      end = np.array([rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h])
      bend = (start + end) / 2 + rng.normal(0, 0.2, 2) * (w, h)
      t = np.linspace(0, 1, 24)[:, None]
      points = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t ** 2 * end  # quadratic Bezier
      canvas.line([tuple(p) for p in points], fill=int(rng.integers(170, 256)),
                  width=max(1, int(round(rng.uniform(0.8, 2.5) * scale))))
  return _draw_layer(shape, draw, blur=0.5 * scale)


def _bubbles(rng, shape):
  h, w = shape
  scale = h / 256
  rings, highlights = Image.new("L", (w, h), 0), Image.new("L", (w, h), 0)
  ring_draw, highlight_draw = ImageDraw.Draw(rings), ImageDraw.Draw(highlights)
  for _ in range(int(rng.integers(1, 7))):
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    r = rng.uniform(3, 30) * scale
    ring_draw.ellipse([x - r, y - r, x + r, y + r], outline=200, width=max(1, int(r / 6)))
    s = max(1.0, r / 5)
    highlight_draw.ellipse([x - r / 2 - s, y - r / 2 - s, x - r / 2 + s, y - r / 2 + s], fill=255)
  blur = ImageFilter.GaussianBlur(0.8 * scale)
  return (np.asarray(rings.filter(blur), np.float32)[..., None] / 255.0,
          np.asarray(highlights.filter(blur), np.float32)[..., None] / 255.0)


def _ruler(rng, shape):
  h, w = shape
  scale = h / 256
  spacing = rng.uniform(5, 10) * scale
  offset = rng.uniform(2, 25) * scale
  horizontal = rng.random() < 0.5
  far_side = rng.random() < 0.5
  length = w if horizontal else h

  def draw(canvas):
    line_width = max(1, int(round(scale)))
    for i, pos in enumerate(np.arange(rng.uniform(0, spacing), length, spacing)):
      tick = (14 if i % 10 == 0 else 9 if i % 5 == 0 else 5) * scale
      a, b = offset, offset + tick
      if far_side:
        a, b = (h if horizontal else w) - a, (h if horizontal else w) - b
      canvas.line([(pos, a), (pos, b)] if horizontal else [(a, pos), (b, pos)], fill=255, width=line_width)
  return _draw_layer(shape, draw, blur=0.4 * scale)


def _ink_ring(rng, d, shape):
  """A purple marker ring drawn around the lesion, as clinicians do."""
  ys, xs = np.nonzero(d < 1.0)
  if len(ys) == 0:
    return None
  pad = rng.uniform(0.05, 0.2) * min(shape)

  def draw(canvas):
    canvas.ellipse([xs.min() - pad, ys.min() - pad, xs.max() + pad, ys.max() + pad], outline=255,
                   width=max(1, int(rng.uniform(1.5, 4.0) * shape[0] / 256)))
  return _draw_layer(shape, draw, blur=0.7)


def generate(rng: np.random.Generator, size: int = 256) -> Dict[str, np.ndarray]:
  """One example at native size: {'image': uint8 HxWx3, 'mask': uint8 HxW in {0, 255}}."""
  shape = native_size(rng, size)
  h, w = shape
  yy, xx = np.mgrid[:h, :w].astype(np.float32)

  image = _skin(rng, shape)
  if rng.random() < 0.25:
    image = _blend(image, _moles(rng, np.full(shape, 9.0, np.float32), shape), rng.uniform(60, 120, 3))
  d = _lesion_field(rng, yy, xx, shape)
  sharpness = math.exp(rng.uniform(math.log(0.008), math.log(0.25)))  # sharp ... very fuzzy border
  alpha = 1.0 / (1.0 + np.exp(np.clip((d - 1.0) / sharpness, -50, 50)))
  opacity = rng.uniform(0.3, 1.0) if rng.random() < 0.3 else rng.uniform(0.75, 1.0)  # some are faint
  image = _blend(image, (alpha * opacity)[..., None], _lesion_colour(rng, d, shape))
  if rng.random() < 0.3 and (globules := _globules(rng, d, shape)) is not None:
    image = _blend(image, globules * rng.uniform(0.5, 0.9), rng.uniform(30, 80, 3))
  if rng.random() < 0.3:
    image = _blend(image, _moles(rng, d, shape), rng.uniform(50, 110, 3) * (1.0, 0.8, 0.7))
  if rng.random() < 0.1 and (ring := _ink_ring(rng, d, shape)) is not None:
    image = _blend(image, ring * 0.8, (120, 60, 150))
  if rng.random() < 0.15:
    image = _blend(image, _ruler(rng, shape) * 0.85, rng.uniform(10, 50, 3))
  if rng.random() < 0.2:
    rings, highlights = _bubbles(rng, shape)
    image = _blend(_blend(image, rings * 0.5, (235, 235, 235)), highlights * 0.9, (255, 255, 255))
  if rng.random() < 0.3:
    image = _blend(image, _hairs(rng, shape), rng.uniform(15, 70) * np.array([1.0, 0.85, 0.75]))

  # Illumination: fall-off from an off-centre light, then the dermoscope's aperture or a soft vignette.
  diag = math.hypot(h, w) / 2
  light_y, light_x = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
  r2 = ((yy - light_y) ** 2 + (xx - light_x) ** 2) / diag ** 2
  image *= (1.0 - rng.uniform(0.0, 0.45) * r2)[..., None]
  r = np.sqrt((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / diag
  lesion = d < 1.0
  visible = _smoothstep((rng.uniform(0.72, 0.98) - r) / 0.03) if rng.random() < 0.35 else None
  if visible is None or np.count_nonzero(lesion & (visible > 0.5)) < 0.5 * np.count_nonzero(lesion):
    visible = 1.0 - rng.uniform(0.0, 0.35) * _smoothstep((r - 0.6) / 0.4)  # no aperture hiding most of the lesion
  image *= visible[..., None]

  pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
  if rng.random() < 0.3:
    pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.8) * h / 256))
  image = np.asarray(pil, np.float32) + rng.uniform(1.0, 6.0) * rng.standard_normal(shape + (3,), np.float32)
  mask = lesion & (visible > 0.5)
  return {"image": np.clip(np.round(image), 0, 255).astype(np.uint8), "mask": mask.astype(np.uint8) * 255}


def example(seed: int, index: int, size: int = 256) -> Dict[str, np.ndarray]:
  """The ``index``-th example of the stream ``seed``; a pure function."""
  return generate(np.random.default_rng([seed, index]), size)
