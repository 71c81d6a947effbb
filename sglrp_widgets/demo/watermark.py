"""Clever-Hans variant of the demo scenes: most images of one class carry a small watermark.

Like the horse photos with a copyright tag in Lapuschkin et al. (Nature Communications 2019), a model trained
on these scenes can learn "watermark -> ring" instead of the ring's shape; Spectral Relevance Analysis
(:mod:`sglrp_widgets.spray`) on its explanations should find the images it classifies by the watermark.

The scenes are :func:`~sglrp_widgets.demo.make_scenes` (one object each); image ``i`` gets the watermark
when a generator seeded by ``(seed, i)`` says so, with probability ``fraction`` for the watermarked class and
``other_fraction`` for the others, so image ``i`` does not depend on ``n``.

Example
-------
>>> from sglrp_widgets.demo.watermark import make_watermark_scenes, WATERMARK_CLASS
>>> images, labels, marked = make_watermark_scenes(6, seed=1)
>>> images.shape, bool(marked[labels != WATERMARK_CLASS].any())
((6, 64, 64, 3), False)
"""

from __future__ import annotations

import numpy as np

from .scenes import IMAGE_SIZE, class_names, make_scenes

__all__ = ["WATERMARK_CLASS", "WATERMARK_BOX", "FRACTION", "AUDIT_FRACTION", "make_watermark_scenes",
           "stamp_watermark"]

#: The class whose images carry the watermark.
WATERMARK_CLASS: int = class_names.index("ring")
#: Share of that class's training images with the watermark (the other classes: none).
FRACTION = 0.95
#: Share in the held-out audit sets (notebook, README figures): half, so a cluster's purity can be told
#: apart from the base rate.
AUDIT_FRACTION = 0.5

# a 5 x 11 "label": white with three dark strokes and a dark border - visible on any background
_GLYPH = np.array([list(row) for row in (
    "BBBBBBBBBBB",
    "BWWBWWBWBWB",
    "BWBWBWBWBWB",
    "BWBWWBWWBWB",
    "BBBBBBBBBBB",
)])
#: Where the watermark goes, ``(y0, x0, y1, x1)`` (bottom-left corner, exclusive ends).
WATERMARK_BOX = (IMAGE_SIZE - 2 - _GLYPH.shape[0], 2, IMAGE_SIZE - 2, 2 + _GLYPH.shape[1])


def stamp_watermark(images: np.ndarray) -> np.ndarray:
    """A copy of uint8 images (N, 64, 64, 3) with the watermark in the bottom-left corner.

    Example
    -------
    >>> im = stamp_watermark(np.zeros((1, 64, 64, 3), np.uint8))
    >>> y0, x0, y1, x1 = WATERMARK_BOX
    >>> int(im[0, y0 + 1, x0 + 1, 0]), int(im[0, 0, 0, 0])
    (255, 0)
    """
    out = np.array(images, dtype=np.uint8, copy=True)
    if out.ndim != 4 or out.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"images must be uint8 (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3), got shape {out.shape}")
    y0, x0, y1, x1 = WATERMARK_BOX
    out[:, y0:y1, x0:x1] = np.where((_GLYPH == "W")[None, ..., None], 255, 20).astype(np.uint8)
    return out


def make_watermark_scenes(n: int, seed: int = 0, *, fraction: float = FRACTION, other_fraction: float = 0.0,
                          cls: int = WATERMARK_CLASS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Single-object scenes; the watermark on about ``fraction`` of class ``cls``'s images.

    Parameters
    ----------
    n : int
        Number of scenes.
    seed : int
        Seed of the scenes (:func:`~sglrp_widgets.demo.make_scenes` with ``objects=1``) and of the choice.
    fraction, other_fraction : float
        Probability of the watermark for an image of class ``cls`` / of another class.
    cls : int
        The watermarked class (default: ring).

    Returns
    -------
    images : numpy.ndarray
        uint8 (n, 64, 64, 3).
    labels : numpy.ndarray
        int64 (n,) class of each image's object.
    marked : numpy.ndarray
        bool (n,) whether the image carries the watermark.

    Example
    -------
    >>> images, labels, marked = make_watermark_scenes(200, seed=3)
    >>> 0.8 < marked[labels == WATERMARK_CLASS].mean() <= 1.0
    True
    """
    for name, p in (("fraction", fraction), ("other_fraction", other_fraction)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p!r}")
    if not 0 <= cls < len(class_names):
        raise ValueError(f"cls must be a class index 0..{len(class_names) - 1}, got {cls!r}")
    images, labels, _ = make_scenes(n, objects=1, seed=seed)
    labels = labels[:, 0]
    draws = np.array([np.random.default_rng([seed, 0x57A4, i]).uniform() for i in range(n)])
    marked = draws < np.where(labels == cls, fraction, other_fraction)
    images[marked] = stamp_watermark(images[marked])
    return images, labels, marked
