"""Procedural "textured shapes": images with a known object mask, made in numpy.

Each image holds one object of one of ten classes on a varied background with a
few small distractor blobs. The generator is designed so that the questions the
paper asks of natural images have an exact answer here:

* **Global evidence**: every class has its own silhouette (circle, star, ...).
* **Local evidence**: every class has its own surface pattern (dots, stripes,
  ...), so a single 8x8 patch of the object already says something about the
  class, as fur or an eye does for a cat.
* **Weak context**: four classes have a "habitat", a background family that
  co-occurs with them more often than chance (as water with fish), so context
  tokens carry a little class information too.
* **Contrast**: objects are always brighter than their background (hue free).
* **Masks**: the object's pixel mask is exact, so object and context tokens are
  known without annotation.

Everything is vectorised over the batch; images are a deterministic function of
``(seed, index)`` whichever way they are requested (see :func:`shapes` and
:class:`ShapesDataset`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

IMAGE_SIZE = 64
CHUNK = 256  # images are generated in chunks of this size, one RNG stream each

CLASS_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "crescent",
    "heart",
    "bar",
    "hexagon",
)
# The class-typical surface pattern of each class, in class order.
PATTERN_NAMES: tuple[str, ...] = (
    "dots",
    "checker",
    "stripes",
    "speckle",
    "grid",
    "rings",
    "plain",
    "waves",
    "polka",
    "spokes",
)
BACKGROUND_NAMES: tuple[str, ...] = ("gradient", "clouds", "weave", "water", "grain")
# Habitat cues: class index -> background family that co-occurs with it.
HABITATS: dict[int, int] = {0: 3, 3: 1, 7: 2, 8: 4}
HABITAT_PROBABILITY = 0.45  # vs 0.2 for any one family without a habitat


@dataclass(frozen=True)
class ShapesBatch:
    """A batch of generated images with their labels and exact object masks.

    Example:
        >>> batch = shapes(4, seed=2)
        >>> batch.images.shape, batch.masks.shape, batch.token_masks(patch_size=8).shape
        ((4, 64, 64, 3), (4, 64, 64), (4, 8, 8))
        >>> [batch.class_names[i] for i in batch.labels], [BACKGROUND_NAMES[i] for i in batch.backgrounds]
    """

    images: np.ndarray  # uint8 [n, H, W, 3]
    labels: np.ndarray  # int64 [n]
    masks: np.ndarray  # bool [n, H, W], True on the object
    backgrounds: np.ndarray  # int64 [n], index into BACKGROUND_NAMES
    class_names: tuple[str, ...] = CLASS_NAMES

    def __len__(self) -> int:
        return len(self.labels)

    def token_masks(self, patch_size: int = 8, threshold: float = 0.5) -> np.ndarray:
        """Per-patch object labels, bool ``[n, H/patch, W/patch]``.

        A patch counts as an object token when at least ``threshold`` of its
        pixels lie on the object.
        """
        return patch_fraction(self.masks, patch_size) >= threshold


def patch_fraction(masks: np.ndarray, patch_size: int) -> np.ndarray:
    """Fraction of each patch covered by the mask, float32 ``[n, h, w]``.

    Example:
        >>> patch_fraction(shapes(4, seed=2).masks, patch_size=8).shape
        (4, 8, 8)
    """
    n, height, width = masks.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"mask size {height}x{width} is not a multiple of the patch size {patch_size}")
    grid = masks.reshape(n, height // patch_size, patch_size, width // patch_size, patch_size)
    return grid.mean(axis=(2, 4), dtype=np.float32)


def shapes(n: int, seed: int = 0) -> ShapesBatch:
    """Generate ``n`` images deterministically from ``seed``.

    Example:
        >>> batch = shapes(8, seed=0)
        >>> batch.images.shape, batch.labels[:3], batch.class_names[batch.labels[0]]
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    chunks = [_chunk(seed, k) for k in range((n + CHUNK - 1) // CHUNK)]
    if not chunks:
        empty = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), bool)
        return ShapesBatch(
            np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), np.zeros(0, np.int64), empty, np.zeros(0, np.int64)
        )
    return ShapesBatch(
        images=np.concatenate([c.images for c in chunks])[:n],
        labels=np.concatenate([c.labels for c in chunks])[:n],
        masks=np.concatenate([c.masks for c in chunks])[:n],
        backgrounds=np.concatenate([c.backgrounds for c in chunks])[:n],
    )


class ShapesDataset(Dataset):
    """A ``torch.utils.data.Dataset`` view of :func:`shapes`: item ``i`` is ``(image, label, mask)``.

    Items are identical to ``shapes(n, seed)`` (same chunked RNG streams); chunks
    are generated on demand and the last few are kept, so sequential access costs
    one vectorised call per 256 images.

    Example:
        >>> ds = ShapesDataset(1000, seed=2)
        >>> image, label, mask = ds[0]  # uint8 [64, 64, 3], int, bool [64, 64]
    """

    class_names = CLASS_NAMES

    def __init__(self, n: int, seed: int = 0, cached_chunks: int = 4):
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        self.n, self.seed = n, seed
        self._chunks: dict[int, ShapesBatch] = {}
        self._cached_chunks = max(1, cached_chunks)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, np.ndarray]:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        i %= self.n
        chunk = self._chunk(i // CHUNK)
        j = i % CHUNK
        return chunk.images[j], int(chunk.labels[j]), chunk.masks[j]

    def _chunk(self, k: int) -> ShapesBatch:
        if k not in self._chunks:
            if len(self._chunks) >= self._cached_chunks:
                self._chunks.pop(next(iter(self._chunks)))
            self._chunks[k] = _chunk(self.seed, k)
        return self._chunks[k]


def _chunk(seed: int, index: int) -> ShapesBatch:
    rng = np.random.default_rng([seed, index])
    return generate(rng, CHUNK)


def generate(rng: np.random.Generator, n: int, size: int = IMAGE_SIZE) -> ShapesBatch:
    """Draw ``n`` images from ``rng`` (the vectorised core of the generator)."""
    labels = rng.integers(0, len(CLASS_NAMES), n)
    backgrounds = _draw_backgrounds(rng, labels)
    yy, xx = np.meshgrid(
        np.arange(size, dtype=np.float32) + 0.5, np.arange(size, dtype=np.float32) + 0.5, indexing="ij"
    )

    canvas = _background(rng, backgrounds, xx, yy)
    canvas = _add_distractors(rng, canvas, xx, yy)

    radius = rng.uniform(0.22, 0.38, n).astype(np.float32) * size
    cx = rng.uniform(radius, size - radius).astype(np.float32)
    cy = rng.uniform(radius, size - radius).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    # object-local pixel coordinates (rotated with the object)
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u_px, v_px = cos * dx + sin * dy, -sin * dx + cos * dy
    r = radius[:, None, None]
    masks = _silhouettes(labels, u_px / r, v_px / r)

    scale = rng.uniform(0.85, 1.2, n).astype(np.float32)[:, None, None]
    pattern = _patterns(rng, labels, u_px * scale, v_px * scale)
    amplitude = rng.uniform(0.2, 0.45, n).astype(np.float32)[:, None, None]
    colour = _bright_colours(rng, n)  # [n, 3]
    shade = (1.0 - amplitude * pattern)[..., None]
    obj = colour[:, None, None, :] * shade

    image = np.where(masks[..., None], obj, canvas)
    image += rng.normal(0.0, 0.02, image.shape).astype(np.float32)
    images = (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return ShapesBatch(images, labels.astype(np.int64), masks, backgrounds.astype(np.int64))


def _draw_backgrounds(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    families = rng.integers(0, len(BACKGROUND_NAMES), len(labels))
    habitat = np.array([HABITATS.get(int(c), -1) for c in range(len(CLASS_NAMES))])[labels]
    use_habitat = (habitat >= 0) & (rng.random(len(labels)) < HABITAT_PROBABILITY)
    return np.where(use_habitat, habitat, families)


def _polar(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.sqrt(u * u + v * v), np.arctan2(v, u)


def _max_projection(u: np.ndarray, v: np.ndarray, angles: tuple[float, ...], absolute: bool = False) -> np.ndarray:
    proj = [np.cos(t) * u + np.sin(t) * v for t in angles]
    return np.maximum.reduce([np.abs(p) for p in proj] if absolute else proj)


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    hu, hv = u * 1.15, -v * 1.15 + 0.25
    return (hu * hu + hv * hv - 1) ** 3 - hu * hu * hv**3 <= 0


# Silhouettes in normalised coordinates (object radius 1), in class order.
SILHOUETTES = (
    lambda u, v: u * u + v * v <= 1.0,  # circle
    lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.8,  # square
    lambda u, v: _max_projection(u, v, (np.pi / 2, 7 * np.pi / 6, 11 * np.pi / 6)) <= 0.5,  # triangle
    lambda u, v: _polar(u, v)[0] <= 0.45 + 0.55 * np.clip(np.cos(5 * _polar(u, v)[1]), 0, 1) ** 1.5,  # star
    lambda u, v: ((np.abs(u) <= 0.32) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.32) & (np.abs(u) <= 1.0)),  # cross
    lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.55**2),  # ring
    lambda u, v: (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v > 0.75**2),  # crescent
    _heart,  # heart
    lambda u, v: u * u + (v / 0.42) ** 2 <= 1.0,  # bar
    lambda u, v: _max_projection(u, v, (0.0, np.pi / 3, 2 * np.pi / 3), absolute=True) <= 0.87,  # hexagon
)

# Surface patterns in pixel units, True = darker shade, in class order.
PATTERNS = (
    lambda u, v, rng: (np.mod(u, 6) - 3) ** 2 + (np.mod(v, 6) - 3) ** 2 <= 2.6,  # dots
    lambda u, v, rng: (np.floor(u / 3) + np.floor(v / 3)) % 2 == 0,  # checker
    lambda u, v, rng: np.mod(u, 5) < 2.5,  # stripes
    lambda u, v, rng: rng.random(u.shape) < 0.5,  # speckle
    lambda u, v, rng: (np.mod(u, 6) < 1.6) | (np.mod(v, 6) < 1.6),  # grid
    lambda u, v, rng: np.mod(np.sqrt(u * u + v * v), 5) < 2.5,  # rings
    lambda u, v, rng: np.zeros(u.shape, bool),  # plain
    lambda u, v, rng: np.sin(u * (2 * np.pi / 6) + 2.0 * np.sin(v * (2 * np.pi / 12))) > 0,  # waves
    lambda u, v, rng: (np.mod(u, 11) - 5.5) ** 2 + (np.mod(v, 11) - 5.5) ** 2 <= 10.0,  # polka
    lambda u, v, rng: np.mod(np.floor(np.arctan2(v, u) * 8 / np.pi), 2) == 0,  # spokes
)


def _silhouettes(labels: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Object masks, each image by its own class rule."""
    out = np.zeros(u.shape, bool)
    for cls, rule in enumerate(SILHOUETTES):
        pick = labels == cls
        if pick.any():
            out[pick] = rule(u[pick], v[pick])
    return out


def _patterns(rng: np.random.Generator, labels: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Class-typical surface patterns in {0, 1} (1 = darker shade)."""
    out = np.zeros(u.shape, np.float32)
    for cls, rule in enumerate(PATTERNS):
        pick = labels == cls
        if pick.any():
            out[pick] = rule(u[pick], v[pick], rng)
    return out


def _bright_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    hue = rng.random(n)
    saturation = rng.uniform(0.2, 0.9, n)
    value = rng.uniform(0.75, 1.0, n)
    return _hsv_to_rgb(hue, saturation, value)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = np.mod(np.array([5.0, 3.0, 1.0])[None, :] + h[:, None] * 6.0, 6.0)
    rgb = v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb.astype(np.float32)


def _background(rng: np.random.Generator, families: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Dark backgrounds (value <= ~0.5) of five families, float32 [n, H, W, 3]."""
    n, size = len(families), xx.shape[0]
    dark = _hsv_to_rgb(rng.random(n), rng.uniform(0.1, 0.8, n), rng.uniform(0.05, 0.25, n))
    light = _hsv_to_rgb(rng.random(n), rng.uniform(0.1, 0.8, n), rng.uniform(0.3, 0.5, n))
    theta = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
    along = (np.cos(theta) * xx + np.sin(theta) * yy) / size  # roughly in [-1.4, 1.4]
    across = (-np.sin(theta) * xx + np.cos(theta) * yy) / size
    phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]

    def family(name: str, pick: np.ndarray) -> np.ndarray:
        a, c, p = along[pick], across[pick], phase[pick]
        if name == "gradient":
            return np.clip(a * 0.7 + 0.5, 0, 1)
        if name == "clouds":
            return _smooth_noise(rng, int(pick.sum()), size, cells=4)
        if name == "weave":
            return 0.5 + 0.25 * np.sin(a * 40 + p) + 0.25 * np.sin(c * 40)
        if name == "water":
            return 0.5 + 0.5 * np.sin(a * 25 + 3 * np.sin(c * 9 + p))
        return rng.random((int(pick.sum()), size, size)).astype(np.float32)  # grain

    mix = np.zeros((n, size, size), np.float32)
    for k, name in enumerate(BACKGROUND_NAMES):
        pick = families == k
        if pick.any():
            mix[pick] = family(name, pick)
    canvas = dark[:, None, None, :] + (light - dark)[:, None, None, :] * mix[..., None]
    is_water = families == BACKGROUND_NAMES.index("water")
    canvas[is_water] = canvas[is_water] * np.array([0.35, 0.8, 1.0], np.float32)  # blue-green water
    return canvas.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled random lattice: soft blotches in [0, 1]."""
    lattice = rng.random((n, cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.minimum(t.astype(int), cells - 1)
    f = (t - i0)[None]
    rows = lattice[:, i0] * (1 - f[..., None]) + lattice[:, i0 + 1] * f[..., None]
    return rows[:, :, i0] * (1 - f[:, None, :]) + rows[:, :, i0 + 1] * f[:, None, :]


def _add_distractors(
    rng: np.random.Generator, canvas: np.ndarray, xx: np.ndarray, yy: np.ndarray, count: int = 4
) -> np.ndarray:
    """Paint ``count`` small blobs of random colour per image (context clutter)."""
    n = canvas.shape[0]
    for _ in range(count):
        cx = rng.uniform(0, xx.shape[1], n).astype(np.float32)[:, None, None]
        cy = rng.uniform(0, xx.shape[0], n).astype(np.float32)[:, None, None]
        rad = rng.uniform(1.5, 3.5, n).astype(np.float32)[:, None, None]
        blob = (xx - cx) ** 2 + (yy - cy) ** 2 <= rad**2
        colour = _hsv_to_rgb(rng.random(n), rng.uniform(0.3, 1.0, n), rng.uniform(0.2, 0.9, n))
        canvas = np.where(blob[..., None], colour[:, None, None, :], canvas)
    return canvas
