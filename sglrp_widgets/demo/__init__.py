"""Embedded demo: synthetic shape scenes and two small bundled Keras classifiers (a CNN and a ViT).

Example
-------
>>> from sglrp_widgets import demo
>>> images, labels, boxes = demo.make_scenes(2, objects=2, seed=0)
>>> model = demo.load_model()                       # doctest: +SKIP
>>> probs = model.predict(demo.preprocess(images))  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .scenes import IMAGE_SIZE, class_names, make_scenes, preprocess, render_scenes

__all__ = [
    "DEFAULT_MODEL",
    "IMAGE_SIZE",
    "MODELS",
    "MODEL_PATH",
    "class_names",
    "load_model",
    "model_path",
    "make_scenes",
    "preprocess",
    "render_scenes",
]

@dataclass(frozen=True)
class DemoModel:
    """One bundled demo classifier: its file, what it is, and the script that trained it."""

    name: str
    filename: str
    description: str
    train_module: str

    @property
    def path(self) -> Path:
        return Path(__file__).with_name(self.filename)


#: The bundled demo classifiers, by name. All take ``preprocess(images)`` (64x64 RGB scenes) and predict
#: :data:`class_names`; ``load_model(name)`` loads one.
MODELS: dict[str, DemoModel] = {
    "cnn": DemoModel("cnn", "demo_model.keras", "small CNN (Conv-BN-ReLU blocks, a residual Add)",
                     "sglrp_widgets.demo.train"),
    "vit": DemoModel("vit", "demo_vit.keras",
                     "small vision transformer (conv stem, 8x8-pixel patch tokens, 4 pre-norm "
                     "MultiHeadAttention + MLP blocks)",
                     "sglrp_widgets.demo.train_vit"),
    "watermark": DemoModel("watermark", "watermark_model.keras",
                           "the same CNN trained on scenes where most rings carry a small watermark "
                           "(the Clever-Hans demo)", "sglrp_widgets.demo.train_watermark"),
}
DEFAULT_MODEL = "cnn"

#: Path of the bundled CNN's weights (written by ``python -m sglrp_widgets.demo.train``).
MODEL_PATH = MODELS["cnn"].path

_lock = threading.Lock()
_cache: dict[str, Any] = {}


def model_path(name_or_path: str | Path | None = None) -> Path:
    """The file of a bundled model (``None`` = the CNN, a name from :data:`MODELS`) or the given path."""
    if name_or_path is None:
        return MODELS[DEFAULT_MODEL].path
    if isinstance(name_or_path, str) and name_or_path in MODELS:
        return MODELS[name_or_path].path
    if isinstance(name_or_path, str) and not name_or_path.endswith(".keras") and "/" not in name_or_path:
        raise ValueError(f"unknown demo model {name_or_path!r}; bundled models: {', '.join(MODELS)} "
                         "(or give the path of a .keras file)")
    return Path(name_or_path)


def load_model(name_or_path: str | Path | None = None) -> Any:
    """Load a bundled demo classifier (cached; safe_mode=True).

    The model maps ``preprocess(images)`` (float32 in [0, 1], shape (N, 64, 64, 3))
    to softmax probabilities over :data:`class_names`.

    Parameters
    ----------
    name_or_path : str or Path, optional
        A name from :data:`MODELS` (default ``"cnn"``: a small CNN with a BatchNormalization directly
        after a convolution and a residual ``Add``; ``"vit"``: a small vision transformer), or another
        ``.keras`` file (also cached).

    Returns
    -------
    keras.Model
        The same object on every call with the same name or path: do not modify it in place
        (``keras.models.clone_model`` gives a copy).

    Example
    -------
    >>> model = load_model()                 # doctest: +SKIP
    >>> model.output_shape                   # doctest: +SKIP
    (None, 6)
    """
    p = model_path(name_or_path)
    key = str(p.resolve())
    with _lock:
        if key in _cache:
            return _cache[key]
        if not p.is_file():
            trainer = next((m.train_module for m in MODELS.values() if m.path == p), "sglrp_widgets.demo.train")
            raise FileNotFoundError(
                f"demo model file not found: {str(p)!r}; "
                f"run `python -m {trainer}` to create it"
            )
        import keras

        from . import layers  # noqa: F401  (registers the layer classes of the bundled models)

        model = keras.saving.load_model(p, safe_mode=True)
        _cache[key] = model
        return model
