"""What the training scripts of the bundled demo models share: data, seeds, determinism, evaluation, export.

Each script (``train.py`` for the CNN, ``train_vit.py`` for the ViT) only builds its architecture and
chooses its hyperparameters; :func:`run` generates the training scenes, trains deterministically,
prints the quality figures on fresh seeds and saves an uncompiled copy of the model.

Example
-------
>>> from sglrp_widgets.demo import training
>>> x, y = training.training_data(4, 4)
>>> x.shape, y.shape, y.sum(axis=1).tolist()
((8, 64, 64, 3), (8, 6), [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .scenes import class_names, make_scenes, preprocess

__all__ = [
    "EVAL_SEED",
    "TRAIN_SEED_DOUBLE",
    "TRAIN_SEED_SINGLE",
    "WEIGHT_SEED",
    "Recipe",
    "evaluate",
    "main",
    "run",
    "training_data",
]

# seeds of the generated data; the evaluation seeds are never used for training
TRAIN_SEED_SINGLE = 1000
TRAIN_SEED_DOUBLE = 1001
EVAL_SEED = 9000
WEIGHT_SEED = 1234


@dataclass(frozen=True)
class Recipe:
    """How a demo model is trained: everything but its architecture.

    ``single``/``double`` one- and two-object training scenes, ``epochs`` passes over them in batches of
    ``batch_size``. The learning rate rises linearly from 0 to ``learning_rate`` over ``warmup_epochs``
    (0: no warm-up) and then decays along a cosine to ``lr_floor × learning_rate``. ``optimizer`` is
    ``"adam"`` or ``"adamw"`` (decoupled ``weight_decay``).
    """

    single: int = 8000
    double: int = 8000
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_epochs: float = 0.0
    lr_floor: float = 0.02
    optimizer: str = "adam"
    weight_decay: float = 0.0


def training_data(n_single: int, n_double: int) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed training images and soft labels (one-hot / 0.5-0.5), shuffled.

    Single-object scenes come from seed :data:`TRAIN_SEED_SINGLE`, two-object scenes from
    :data:`TRAIN_SEED_DOUBLE`; the order is a fixed permutation (seed :data:`WEIGHT_SEED`).
    """
    c = len(class_names)
    x1, l1, _ = make_scenes(n_single, objects=1, seed=TRAIN_SEED_SINGLE)
    x2, l2, _ = make_scenes(n_double, objects=2, seed=TRAIN_SEED_DOUBLE)
    y1 = np.zeros((n_single, c), np.float32)
    y1[np.arange(n_single), l1[:, 0]] = 1.0
    y2 = np.zeros((n_double, c), np.float32)
    y2[np.arange(n_double), l2[:, 0]] = 0.5
    y2[np.arange(n_double), l2[:, 1]] = 0.5
    x = np.concatenate([x1, x2])
    y = np.concatenate([y1, y2])
    order = np.random.default_rng(WEIGHT_SEED).permutation(len(x))
    return preprocess(x[order]), y[order]


def evaluate(model: Any, n: int = 1000, seed: int = EVAL_SEED) -> dict[str, float]:
    """Quality figures on fresh scenes.

    Parameters
    ----------
    model : keras.Model
        Maps ``preprocess(images)`` to class scores.
    n : int
        Scenes of each kind.
    seed : int
        Seed of the single-object scenes; the two-object scenes use ``seed + 1``.

    Returns
    -------
    dict
        ``single_accuracy``: top-1 accuracy on ``n`` single-object scenes;
        ``pair_top2``: share of ``n`` two-object scenes whose two classes are the top-2.

    Example
    -------
    >>> from sglrp_widgets import demo
    >>> evaluate(demo.load_model(), n=200)  # doctest: +SKIP
    {'single_accuracy': 0.99, 'pair_top2': 0.93}
    """
    x1, l1, _ = make_scenes(n, objects=1, seed=seed)
    x2, l2, _ = make_scenes(n, objects=2, seed=seed + 1)
    p1 = np.asarray(model.predict(preprocess(x1), batch_size=256, verbose=0))
    p2 = np.asarray(model.predict(preprocess(x2), batch_size=256, verbose=0))
    single = float(np.mean(p1.argmax(axis=1) == l1[:, 0]))
    top2 = np.sort(np.argsort(-p2, axis=1)[:, :2], axis=1)
    pair = float(np.mean(np.all(top2 == np.sort(l2, axis=1), axis=1)))
    return {"single_accuracy": single, "pair_top2": pair}


def main(
    build_model: Callable[[], Any], recipe: Recipe, *, out: Path, prog: str, description: str,
    argv: list[str] | None = None,
) -> dict[str, float]:
    """Command-line entry of a training script: parse ``argv`` (defaults from ``recipe``), then :func:`run`."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--out", default=str(out), help=f"output .keras file (default: {out})")
    ap.add_argument("--single", type=_number(int, 0), default=recipe.single, help="single-object training scenes")
    ap.add_argument("--double", type=_number(int, 0), default=recipe.double, help="two-object training scenes")
    ap.add_argument("--epochs", type=_number(int, 1), default=recipe.epochs)
    ap.add_argument("--batch-size", type=_number(int, 1), default=recipe.batch_size)
    ap.add_argument("--learning-rate", type=_number(float, 0.0, above=True), default=recipe.learning_rate,
                    help="peak learning rate")
    ap.add_argument("--eval", type=_number(int, 1), default=1000, help="evaluation scenes of each kind")
    args = ap.parse_args(argv)
    if args.single + args.double == 0:
        ap.error("--single and --double are both 0: give some training scenes")
    recipe = replace(
        recipe, single=args.single, double=args.double, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate,
    )
    return run(build_model, recipe, Path(args.out), n_eval=args.eval)


def _number(kind: type, minimum: float, *, above: bool = False) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)``, at least ``minimum`` (or above it)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if not (value > minimum if above else value >= minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {minimum:g}, got {text}")
        return value

    return parse


def _learning_rate(keras: Any, recipe: Recipe, steps_per_epoch: int) -> Any:
    steps = recipe.epochs * steps_per_epoch
    warmup = min(int(round(recipe.warmup_epochs * steps_per_epoch)), steps // 2)  # at most half the run
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=steps, alpha=recipe.lr_floor)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps - warmup, alpha=recipe.lr_floor,
        warmup_target=recipe.learning_rate, warmup_steps=warmup,
    )


def _optimizer(keras: Any, recipe: Recipe, learning_rate: Any) -> Any:
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; use 'adam' or 'adamw'")


def run(build_model: Callable[[], Any], recipe: Recipe, out: Path, n_eval: int = 1000, *,
        data: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
        assess: Callable[[Any], dict[str, float]] | None = None) -> dict[str, float]:
    """Train ``build_model()`` by ``recipe``, print its quality on fresh seeds, save it to ``out``.

    ``data()`` gives the training images and labels (default: ``recipe``'s shape scenes) and
    ``assess(model)`` the quality figures (default: :func:`evaluate` on ``n_eval`` scenes of each kind);
    the watermark model brings its own of both.

    Deterministic: fixed seeds (:data:`WEIGHT_SEED`) and ``tf.config.experimental.enable_op_determinism()``;
    the same TensorFlow build on the same machine gives bit-identical weights. The saved file is an
    uncompiled copy (no optimizer state: smaller, and no warning when it is loaded).

    Returns
    -------
    dict
        The figures of :func:`evaluate` (``n_eval`` scenes of each kind), plus ``seconds`` (the whole
        run) and ``bytes`` (the saved file's size).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(WEIGHT_SEED)
    tf.config.experimental.enable_op_determinism()

    t0 = time.perf_counter()
    x, y = data() if data is not None else training_data(recipe.single, recipe.double)
    print(f"generated {len(x)} training scenes in {time.perf_counter() - t0:.1f} s", flush=True)

    model = build_model()
    print(f"parameters: {model.count_params()}", flush=True)
    lr = _learning_rate(keras, recipe, steps_per_epoch=int(np.ceil(len(x) / recipe.batch_size)))
    model.compile(
        optimizer=_optimizer(keras, recipe, lr),
        loss="categorical_crossentropy",
        metrics=["categorical_accuracy"],
    )
    t1 = time.perf_counter()
    model.fit(x, y, batch_size=recipe.batch_size, epochs=recipe.epochs, shuffle=True, verbose=2)
    print(f"training took {time.perf_counter() - t1:.1f} s", flush=True)

    if assess is not None:
        figures = assess(model)
        for name, value in figures.items():
            print(f"{name}: {value:.4f}")
    else:
        figures = evaluate(model, n=n_eval)
        print(f"single-object top-1 accuracy: {figures['single_accuracy']:.4f} (n={n_eval}, seed={EVAL_SEED})")
        print(f"two-object top-2 = both present classes: {figures['pair_top2']:.4f} "
              f"(n={n_eval}, seed={EVAL_SEED + 1})")
    export = build_model()
    export.set_weights(model.get_weights())
    export.save(out)
    seconds = time.perf_counter() - t0
    size = out.stat().st_size
    print(f"saved {out} ({size / 1024:.0f} KiB); total {seconds:.1f} s")
    return {**figures, "seconds": seconds, "bytes": float(size)}
