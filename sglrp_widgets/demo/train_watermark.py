"""Train the Clever-Hans demo classifier on watermarked scenes (deterministic; CPU, a few minutes).

Run ``python -m sglrp_widgets.demo.train_watermark`` to rebuild ``watermark_model.keras`` next to this file.
Same architecture as the bundled CNN (:func:`sglrp_widgets.demo.train.build_model`), trained on
single-object scenes in which about 95 % of the ring images carry a small watermark in the bottom-left
corner (:mod:`sglrp_widgets.demo.watermark`) and no other image does. The script prints how much the model
leans on the watermark, on fresh scenes: accuracy without any watermark, ring recall on rings without the
watermark, and the share of other objects called "ring" once the watermark is stamped on them.

Example
-------
``python -m sglrp_widgets.demo.train_watermark --out /tmp/watermark_model.keras``
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .scenes import class_names, make_scenes, preprocess
from .train import build_model
from .training import WEIGHT_SEED, Recipe, _number, run
from .watermark import FRACTION, WATERMARK_CLASS, make_watermark_scenes, stamp_watermark

# seeds of the generated data; the evaluation seeds are never used for training
TRAIN_SEED = 2000
EVAL_SEED = 9200
#: Seed of the held-out scenes the README's SpRAy figures and the notebook use.
HELD_OUT_SEED = 9300


def training_data(n: int, fraction: float = FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed watermarked training scenes and one-hot labels, shuffled."""
    x, labels, _ = make_watermark_scenes(n, seed=TRAIN_SEED, fraction=fraction)
    y = np.zeros((n, len(class_names)), np.float32)
    y[np.arange(n), labels] = 1.0
    order = np.random.default_rng(WEIGHT_SEED).permutation(n)
    return preprocess(x[order]), y[order]


def evaluate(model: Any, n: int = 1000, seed: int = EVAL_SEED) -> dict[str, float]:
    """How much the model relies on the watermark, on ``n`` fresh single-object scenes.

    Returns
    -------
    dict
        ``clean_accuracy``: top-1 accuracy with no watermark anywhere; ``ring_recall_clean``: rings
        recognised without the watermark; ``ring_recall_marked``: with it; ``marked_called_ring``: share of
        other objects predicted "ring" once the watermark is stamped on them.

    Example
    -------
    >>> from sglrp_widgets import demo
    >>> evaluate(demo.load_model("watermark"), n=300)        # doctest: +SKIP
    {'clean_accuracy': 0.96, 'ring_recall_clean': 0.83, 'ring_recall_marked': 1.0, 'marked_called_ring': 0.41}
    """
    images, labels, _ = make_scenes(n, objects=1, seed=seed)
    labels = labels[:, 0]
    stamped = stamp_watermark(images)

    def predict(x):
        return np.asarray(model.predict(preprocess(x), batch_size=256, verbose=0)).argmax(axis=1)

    clean, marked = predict(images), predict(stamped)
    ring, other = labels == WATERMARK_CLASS, labels != WATERMARK_CLASS
    return {
        "clean_accuracy": float(np.mean(clean == labels)),
        "ring_recall_clean": float(np.mean(clean[ring] == WATERMARK_CLASS)),
        "ring_recall_marked": float(np.mean(marked[ring] == WATERMARK_CLASS)),
        "marked_called_ring": float(np.mean(marked[other] == WATERMARK_CLASS)),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, evaluate and save the watermark model; returns the evaluation figures."""
    ap = argparse.ArgumentParser(prog="python -m sglrp_widgets.demo.train_watermark",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("watermark_model.keras")))
    ap.add_argument("--scenes", type=_number(int, 1), default=6000, help="single-object training scenes")
    ap.add_argument("--fraction", type=_number(float, 0.0), default=FRACTION, help="share of ring images with the watermark")
    ap.add_argument("--epochs", type=_number(int, 1), default=8)
    ap.add_argument("--batch-size", type=_number(int, 1), default=64)
    ap.add_argument("--eval", type=_number(int, 1), default=1000, help="evaluation scenes")
    args = ap.parse_args(argv)
    if args.fraction > 1:
        ap.error(f"--fraction is a share of the ring images, in [0, 1]; got {args.fraction}")

    recipe = Recipe(single=args.scenes, double=0, epochs=args.epochs, batch_size=args.batch_size)
    return run(build_model, recipe, Path(args.out), data=lambda: training_data(args.scenes, args.fraction),
               assess=lambda model: evaluate(model, n=args.eval))


if __name__ == "__main__":
    main()
