"""Train the bundled demo classifier (deterministic; CPU, a few minutes).

Run ``python -m sglrp_widgets.demo.train`` to rebuild ``demo_model.keras`` next to this
file. The script generates its training set on the fly with :func:`make_scenes`
(single-object scenes with one-hot labels, two-object scenes with 0.5/0.5 soft labels),
trains a small CNN (a folded-able Conv→BatchNormalization→ReLU block, a residual ``Add``,
global average pooling and a softmax ``Dense`` head) and prints two quality figures on
fresh seeds: the top-1 accuracy on single-object scenes, and the share of two-object
scenes whose two classes are the model's top-2.

Example
-------
``python -m sglrp_widgets.demo.train --out /tmp/demo_model.keras``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .scenes import class_names, make_scenes, preprocess

# seeds of the generated data; the evaluation seeds are never used for training
TRAIN_SEED_SINGLE = 1000
TRAIN_SEED_DOUBLE = 1001
EVAL_SEED = 9000
WEIGHT_SEED = 1234


def build_model(num_classes: int = len(class_names)) -> Any:
    """The demo architecture (untrained).

    Only layers the engine supports: Conv2D, BatchNormalization directly after a
    Conv2D without activation (foldable), ReLU, Add, MaxPooling2D,
    GlobalAveragePooling2D and a softmax Dense.

    Example
    -------
    >>> build_model().count_params() < 300_000  # doctest: +SKIP
    True
    """
    import keras
    from keras import layers

    def conv_bn_relu(x: Any, filters: int, name: str) -> Any:
        x = layers.Conv2D(filters, 3, padding="same", name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    inp = keras.Input((64, 64, 3), name="image")
    x = conv_bn_relu(inp, 16, "conv1")
    x = layers.MaxPooling2D(2, name="pool1")(x)  # 32x32
    x = conv_bn_relu(x, 32, "conv2")
    x = layers.MaxPooling2D(2, name="pool2")(x)  # 16x16
    # residual block: x + BN(conv(relu(BN(conv(x)))))
    y = conv_bn_relu(x, 32, "res_a")
    y = layers.Conv2D(32, 3, padding="same", name="res_b")(y)
    y = layers.BatchNormalization(name="res_b_bn")(y)
    x = layers.Add(name="res_add")([x, y])
    x = layers.ReLU(name="res_relu")(x)
    x = layers.MaxPooling2D(2, name="pool3")(x)  # 8x8
    x = conv_bn_relu(x, 64, "conv_last")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="sglrp_demo_shapes")


def training_data(n_single: int, n_double: int) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed training images and soft labels (one-hot / 0.5-0.5), shuffled."""
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


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, evaluate and save the demo model; returns the quality figures."""
    ap = argparse.ArgumentParser(prog="python -m sglrp_widgets.demo.train", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("demo_model.keras")))
    ap.add_argument("--single", type=int, default=8000, help="single-object training scenes")
    ap.add_argument("--double", type=int, default=8000, help="two-object training scenes")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--eval", type=int, default=1000, help="evaluation scenes of each kind")
    args = ap.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(WEIGHT_SEED)
    tf.config.experimental.enable_op_determinism()

    t0 = time.perf_counter()
    x, y = training_data(args.single, args.double)
    print(f"generated {len(x)} training scenes in {time.perf_counter() - t0:.1f} s", flush=True)

    model = build_model()
    print(f"parameters: {model.count_params()}", flush=True)
    steps = args.epochs * int(np.ceil(len(x) / args.batch_size))
    lr = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps, alpha=0.02)
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="categorical_crossentropy",
        metrics=["categorical_accuracy"],
    )
    t1 = time.perf_counter()
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=2)
    print(f"training took {time.perf_counter() - t1:.1f} s", flush=True)

    figures = evaluate(model, n=args.eval)
    print(
        f"single-object top-1 accuracy: {figures['single_accuracy']:.4f} "
        f"(n={args.eval}, seed={EVAL_SEED})"
    )
    print(
        f"two-object top-2 = both present classes: {figures['pair_top2']:.4f} "
        f"(n={args.eval}, seed={EVAL_SEED + 1})"
    )
    out = Path(args.out)
    # save an uncompiled copy: no optimizer state (smaller file, no warning when loading)
    export = build_model()
    export.set_weights(model.get_weights())
    export.save(out)
    print(f"saved {out} ({out.stat().st_size / 1024:.0f} KiB); total {time.perf_counter() - t0:.1f} s")
    return figures


if __name__ == "__main__":
    main()
