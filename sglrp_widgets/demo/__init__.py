"""Embedded demo: synthetic shape scenes and a small bundled Keras classifier.

Example
-------
>>> from sglrp_widgets import demo
>>> images, labels, boxes = demo.make_scenes(2, objects=2, seed=0)
>>> model = demo.load_model()                       # doctest: +SKIP
>>> probs = model.predict(demo.preprocess(images))  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .scenes import IMAGE_SIZE, class_names, make_scenes, preprocess, render_scenes

__all__ = [
    "IMAGE_SIZE",
    "MODEL_PATH",
    "class_names",
    "load_model",
    "make_scenes",
    "preprocess",
    "render_scenes",
]

#: Path of the bundled weights (written by ``python -m sglrp_widgets.demo.train``).
MODEL_PATH = Path(__file__).with_name("demo_model.keras")

_lock = threading.Lock()
_cache: dict[str, Any] = {}


def load_model(path: str | Path | None = None) -> Any:
    """Load the bundled demo classifier (cached; safe_mode=True).

    The model maps ``preprocess(images)`` (float32 in [0, 1], shape (N, 64, 64, 3))
    to softmax probabilities over :data:`class_names`. It contains a BatchNormalization
    directly after a convolution and a residual ``Add``.

    Parameters
    ----------
    path : str or Path, optional
        Another ``.keras`` file to load instead of the bundled one (also cached).

    Returns
    -------
    keras.Model
        The same object on every call with the same path.

    Example
    -------
    >>> model = load_model()                 # doctest: +SKIP
    >>> model.output_shape                   # doctest: +SKIP
    (None, 6)
    """
    p = Path(MODEL_PATH if path is None else path)
    key = str(p.resolve())
    with _lock:
        if key in _cache:
            return _cache[key]
        if not p.is_file():
            raise FileNotFoundError(
                f"demo model file not found: {str(p)!r}; "
                "run `python -m sglrp_widgets.demo.train` to create it"
            )
        import keras

        model = keras.saving.load_model(p, safe_mode=True)
        _cache[key] = model
        return model
