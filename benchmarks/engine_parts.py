"""Where an LRP call's time goes: the compiled forward (with rule denominators) and backward passes.

    python benchmarks/engine_parts.py [--methods lrp.epsilon deep_taylor.bounded sglrp]

VGG16 (random weights), batch 1, medians of 7, next to a plain Keras forward and input gradient measured in
the same run. With F = plain forward and B = plain gradient - F, rules whose denominators are not the
forward's own z (z+, alpha-beta, ...) cost about F + F + B, i.e. (2F + B) / (F + B) of a gradient, and
SGLRP/CLRP's dual sums one more F on each layer where their input ``u`` is not all ones (on VGG16, whose z+
layers conserve, none: ``rules.near_ones``); the engine's convolutions on >= 256 channels run flipped
(``LinearOp.runs_flipped``), faster than the Keras forward's own, so its F is below the plain F.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sglrp_widgets.engine import Explainer  # noqa: E402
from sglrp_widgets.lrp import bound_args  # noqa: E402


def median_seconds(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--methods", nargs="+", default=["lrp.epsilon", "deep_taylor.bounded", "lrp.z_plus", "sglrp"])
    args = ap.parse_args(argv)
    model = keras.applications.VGG16(weights=None, classifier_activation=None)
    x = np.random.default_rng(0).uniform(-120, 150, (1, 224, 224, 3)).astype("float32")
    xt = tf.constant(x)

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = model(x, training=False)[:, 1]
        return tape.gradient(score, x)

    @tf.function
    def forward(x):
        return model(x, training=False)

    f = median_seconds(lambda: forward(xt).numpy())
    g = median_seconds(lambda: gradient(xt).numpy())
    print(f"plain forward F = {f:.3f} s, plain gradient = {g:.3f} s (B = {g - f:.3f} s); "
          f"(2F + B) / (F + B) = {(2 * f + g - f) / g:.2f}")
    print("| method | compiled forward s | backward s (one target) | whole call, new image s | ÷ gradient |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(1)
    for method in args.methods:
        ex = Explainer(model, method, cache=None)
        ex(x, 1)
        low, high = bound_args(ex._bounds(x))
        backend = ex.backend
        _, state, _ = backend.forward(xt, low, high)
        head = tf.constant(rng.random((1, 1000)).astype("float32"))
        fw = median_seconds(lambda: backend.forward(xt, low, high)[0].numpy())
        bw = median_seconds(lambda: backend.backward(state, head).numpy())
        call = median_seconds(lambda: ex(x + np.float32(rng.random()), 1))
        print(f"| {method} | {fw:.3f} | {bw:.3f} | {call:.3f} | {call / g:.2f} |", flush=True)


if __name__ == "__main__":
    main()
