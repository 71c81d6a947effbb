"""Deterministic synthetic scenes of simple shapes for the embedded demo model.

Each scene is a 64x64 RGB image with one or two flat-coloured shapes on a plain,
linear-gradient or noisy background, in greens, yellows, ochres, browns and greys only, so
that the red/blue relevance colormaps overlaid on a scene never meet colours of their own. Everything is drawn from a per-image random
generator seeded by ``(seed, objects, index)``, so image ``i`` of
``make_scenes(n, objects, seed)`` does not depend on ``n``.

Example
-------
>>> from sglrp_widgets.demo.scenes import make_scenes, class_names
>>> images, labels, boxes = make_scenes(4, objects=2, seed=0)
>>> images.shape, labels.shape, boxes.shape
((4, 64, 64, 3), (4, 2), (4, 2, 4))
>>> [class_names[k] for k in labels[0]]  # doctest: +SKIP
['ring', 'square']
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "IMAGE_SIZE",
    "class_names",
    "make_scenes",
    "preprocess",
    "render_scenes",
    "Scenes",
]

#: Height and width of every scene.
IMAGE_SIZE = 64

#: Class names, index = label.
class_names: list[str] = ["circle", "square", "triangle", "cross", "ring", "star"]

_BACKGROUNDS = ("plain", "gradient", "noise")


class Scenes(NamedTuple):
    """Full rendering of a batch of scenes (see :func:`render_scenes`)."""

    images: np.ndarray  # uint8 (n, 64, 64, 3)
    labels: np.ndarray  # int64 (n, objects)
    boxes: np.ndarray  # int64 (n, objects, 4) as (y0, x0, y1, x1), exclusive ends
    masks: np.ndarray  # bool (n, objects, 64, 64): pixels of each object
    backgrounds: np.ndarray  # uint8 (n, 64, 64, 3): the scene without its objects


def preprocess(x: np.ndarray) -> np.ndarray:
    """Map raw 0..255 images to the demo model's input space, ``float32(x) / 255``.

    Parameters
    ----------
    x : array_like
        Raw images (any shape), values in 0..255.

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape with values in [0, 1].

    Example
    -------
    >>> preprocess(np.array([0, 255], dtype=np.uint8)).tolist()
    [0.0, 1.0]
    """
    return np.asarray(x, dtype=np.float32) / np.float32(255.0)


# --------------------------------------------------------------------------- shapes
_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64) + 0.5  # pixel centres


def _rotated(cy: float, cx: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates relative to (cy, cx), rotated by -angle."""
    dy = _YY - cy
    dx = _XX - cx
    c, s = np.cos(angle), np.sin(angle)
    return c * dy - s * dx, s * dy + c * dx


def _shape_mask(cls: int, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    """Boolean mask of shape ``cls`` with centre (cy, cx), outer radius r."""
    dy, dx = _rotated(cy, cx, angle)
    name = class_names[cls]
    if name == "circle":
        return dy * dy + dx * dx <= r * r
    if name == "ring":
        d2 = dy * dy + dx * dx
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if name == "square":
        h = 0.8 * r
        return (np.abs(dy) <= h) & (np.abs(dx) <= h)
    if name == "cross":
        w = 0.32 * r
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    if name == "triangle":
        # equilateral triangle pointing "up" (negative dy) with circumradius r
        inside = np.ones_like(dy, dtype=bool)
        for k in range(3):
            a = -np.pi / 2 + k * 2 * np.pi / 3  # direction of vertex k
            # edge opposite vertex k has outward normal -(cos a, sin a) at distance r/2
            inside &= (dx * np.cos(a) + dy * np.sin(a)) >= -0.5 * r
        return inside
    if name == "star":
        rho = np.sqrt(dy * dy + dx * dx)
        theta = np.arctan2(dy, dx) + np.pi / 2
        sector = 2 * np.pi / 5
        # angular distance to the nearest star point, in [0, sector/2]
        phi = np.abs(((theta + sector / 2) % sector) - sector / 2)
        inner = 0.42 * r
        # straight edge between a point (angle 0, radius r) and an inner corner (angle sector/2)
        p1 = np.array([r, 0.0])
        p2 = np.array([inner * np.cos(sector / 2), inner * np.sin(sector / 2)])
        px, py = rho * np.cos(phi), rho * np.sin(phi)
        # the side of the line p1->p2 containing the origin
        ex, ey = p2 - p1
        cross_pt = ex * (py - p1[1]) - ey * (px - p1[0])
        cross_org = ex * (0 - p1[1]) - ey * (0 - p1[0])
        return cross_pt * np.sign(cross_org) >= 0
    raise AssertionError(cls)  # pragma: no cover


# ----------------------------------------------------------------------- colours
# The relevance colormaps are red/blue diverging ("seismic" by default): scenes use only hues that
# collide with neither: half the colours are warm (browns, ochres, yellows: 35-65 degrees), half
# cool (olives and greens: 65-150 degrees), at any lightness and any saturation up to
# PALETTE_MAX_SATURATION (saturation 0 gives greys). Colours are drawn independently of the class,
# so colour is never a cue to it.
#: Hue ranges (degrees) of the scene colours, each drawn equally often; greys have no hue.
PALETTE_HUES = ((35.0, 65.0), (65.0, 150.0))
#: Highest HSV saturation of a scene colour (0.85 keeps yellows and greens, avoids neon tones).
PALETTE_MAX_SATURATION = 0.85
#: Least RGB (L2) distance between an object's colour and its background's mean colour.
MIN_CONTRAST = 120.0


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb) * 255.0


def _palette_colour(
    rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]
) -> np.ndarray:
    """An RGB colour (0..255 floats) with a palette hue and the given HSV saturation and value ranges."""
    hue = rng.uniform(*PALETTE_HUES[int(rng.integers(len(PALETTE_HUES)))]) / 360.0
    return _hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value))


def _background_colour(rng: np.random.Generator) -> np.ndarray:
    # muted: greys, beiges, olives, dull greens, at any lightness
    return _palette_colour(rng, saturation=(0.0, 0.5), value=(0.08, 0.95))


def _background(rng: np.random.Generator) -> np.ndarray:
    kind = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    base = _background_colour(rng)
    if kind == "plain":
        bg = np.broadcast_to(base, (IMAGE_SIZE, IMAGE_SIZE, 3)).copy()
    elif kind == "gradient":
        other = _background_colour(rng)
        a = rng.uniform(0, 2 * np.pi)
        t = (np.cos(a) * (_XX - 32) + np.sin(a) * (_YY - 32)) / 64.0 + 0.5
        t = np.clip(t, 0, 1)[..., None]
        bg = (1 - t) * base + t * other
    else:
        # luminance noise (the same offset in every channel) keeps each pixel's hue
        noise = rng.normal(0, rng.uniform(8, 30), size=(IMAGE_SIZE, IMAGE_SIZE, 1))
        bg = base + noise
    return np.clip(np.rint(bg), 0, 255).astype(np.uint8)


def _object_colour(rng: np.random.Generator, bg_mean: np.ndarray) -> np.ndarray:
    """A palette colour well separated from the background mean (L2 distance >= MIN_CONTRAST)."""
    for _ in range(100):
        c = _palette_colour(rng, saturation=(0.0, PALETTE_MAX_SATURATION), value=(0.12, 1.0))
        if np.linalg.norm(c - bg_mean) >= MIN_CONTRAST:
            return c
    # fall back on black or white, whichever is farther from the background (always far enough)
    return np.full(3, 0.0 if bg_mean.mean() > 127.5 else 255.0)


def _box_of(mask: np.ndarray) -> np.ndarray:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return np.array([ys[0], xs[0], ys[-1] + 1, xs[-1] + 1], dtype=np.int64)


def _boxes_overlap(a: np.ndarray, b: np.ndarray, gap: int = 1) -> bool:
    return not (
        a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]
    )


def _one_scene(rng: np.random.Generator, objects: int):
    bg = _background(rng)
    img = bg.copy()
    bg_mean = bg.reshape(-1, 3).mean(axis=0)
    classes = rng.choice(len(class_names), size=objects, replace=False)
    masks: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    rmin, rmax = (9.0, 20.0) if objects == 1 else (7.0, 13.0)
    for cls in classes:
        for _attempt in range(200):
            r = rng.uniform(rmin, rmax)
            m = r + 1.0
            cy = rng.uniform(m, IMAGE_SIZE - m)
            cx = rng.uniform(m, IMAGE_SIZE - m)
            angle = rng.uniform(-np.pi / 9, np.pi / 9)  # +-20 degrees
            mask = _shape_mask(int(cls), cy, cx, r, angle)
            if mask.sum() < 20:
                continue
            box = _box_of(mask)
            if any(_boxes_overlap(box, b) for b in boxes):
                continue
            break
        else:  # pragma: no cover - practically unreachable with these sizes
            raise RuntimeError("could not place objects without overlap")
        colour = _object_colour(rng, bg_mean)
        img[mask] = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
        masks.append(mask)
        boxes.append(box)
    return img, bg, classes.astype(np.int64), np.stack(boxes), np.stack(masks)


def render_scenes(n: int, objects: int = 1, seed: int = 0) -> Scenes:
    """Render ``n`` scenes and return images, labels, boxes, object masks and backgrounds.

    Same arguments and same images as :func:`make_scenes`; the extra fields are for tests
    and for evaluating localization (e.g. relevance inside the object's mask).

    Example
    -------
    >>> s = render_scenes(2, objects=2, seed=1)
    >>> bool((s.images[~s.masks.any(axis=1)] == s.backgrounds[~s.masks.any(axis=1)]).all())
    True
    """
    n = _check_int("n", n, minimum=0)
    if objects not in (1, 2) or isinstance(objects, bool):
        raise ValueError(f"objects must be 1 or 2, got {objects!r}")
    seed = _check_int("seed", seed, minimum=0)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    bgs = np.empty_like(images)
    labels = np.empty((n, objects), dtype=np.int64)
    boxes = np.empty((n, objects, 4), dtype=np.int64)
    masks = np.empty((n, objects, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for i in range(n):
        rng = np.random.default_rng([seed, objects, i])
        images[i], bgs[i], labels[i], boxes[i], masks[i] = _one_scene(rng, objects)
    return Scenes(images, labels, boxes, masks, bgs)


def make_scenes(
    n: int, objects: int = 1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make ``n`` deterministic synthetic scenes with one or two shapes each.

    Parameters
    ----------
    n : int
        Number of scenes (>= 0).
    objects : {1, 2}
        Shapes per scene. Two shapes always have distinct classes and disjoint
        bounding boxes (at least one pixel apart).
    seed : int
        Non-negative seed. The same ``(n, objects, seed)`` always gives the same
        scenes, and scene ``i`` does not depend on ``n``.

    Returns
    -------
    images : numpy.ndarray
        uint8 ``(n, 64, 64, 3)`` raw RGB images; apply :func:`preprocess` before the model.
    labels : numpy.ndarray
        int64 ``(n, objects)`` class indices into :data:`class_names`.
    boxes : numpy.ndarray
        int64 ``(n, objects, 4)`` tight boxes ``(y0, x0, y1, x1)`` of each shape's pixels,
        ``y1``/``x1`` exclusive, in the order of ``labels``.

    Example
    -------
    >>> images, labels, boxes = make_scenes(3, objects=1, seed=7)
    >>> images.dtype, labels.dtype, boxes[0].shape
    (dtype('uint8'), dtype('int64'), (1, 4))
    """
    s = render_scenes(n, objects=objects, seed=seed)
    return s.images, s.labels, s.boxes


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)
