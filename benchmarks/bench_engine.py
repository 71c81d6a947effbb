"""Relevance pass ÷ plain input-gradient pass, measured in the same run (VGG16, random weights, CPU).

    python benchmarks/bench_engine.py [--batch 1 8] [--repeats 5] [--methods lrp.epsilon deep_taylor.bounded ...]

Prints a markdown table of median seconds per call and the ratio to the plain gradient (a `tape.gradient`
of the target logit through the Keras model, compiled with tf.function), plus first-call ÷ steady-call and
five-targets ÷ one-target ratios. Machines here are noisy: medians of --repeats runs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sglrp_widgets.engine import Explainer  # noqa: E402

DEFAULT_METHODS = ["lrp.epsilon", "deep_taylor.bounded", "lrp.z_plus", "lrp.alpha_2_beta_1",
                   "lrp.sequential_preset_a_flat", "lrp.epsilon_gamma_box", "sglrp", "clrp", "gradient",
                   "grad_cam"]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    ap.add_argument("--model", default="vgg16", choices=["vgg16", "resnet50", "mobilenetv2"])
    args = ap.parse_args(argv)

    build = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50,
             "mobilenetv2": keras.applications.MobileNetV2}[args.model]
    model = build(weights=None, classifier_activation=None)
    rng = np.random.default_rng(0)
    print(f"model={args.model} tf={tf.__version__} keras={keras.__version__} repeats={args.repeats} (median)")
    print()
    print("| batch | method | first call s | steady s | ÷ gradient | first ÷ steady | 5 targets ÷ 1 |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batch:
        x = tf.constant(rng.uniform(-120, 150, (batch, 224, 224, 3)).astype("float32"))
        t = tf.constant(rng.integers(0, 1000, batch).astype("int32"))

        @tf.function
        def plain_gradient(x, t):
            with tf.GradientTape() as tape:
                tape.watch(x)
                z = model(x, training=False)
                score = tf.reduce_sum(tf.gather(z, t, batch_dims=1))
            return tape.gradient(score, x)

        plain_gradient(x, t)
        base = median_time(lambda: plain_gradient(x, t).numpy(), args.repeats)
        print(f"| {batch} | plain input gradient (baseline) | | {base:.3f} | 1.00 | | |")
        for method in args.methods:
            ex = Explainer(model, method, cache=None)
            targets = t.numpy()
            t0 = time.perf_counter()
            ex(x.numpy(), targets)
            first = time.perf_counter() - t0
            xs = x.numpy()
            steady = median_time(lambda: ex(xs, (targets + 1) % 1000), args.repeats)
            five = [[(int(v) + j * 7) % 1000 for j in range(5)] for v in targets]
            ex(xs, five)
            multi = median_time(lambda: ex(xs, five), max(1, args.repeats // 2))
            print(f"| {batch} | {method} | {first:.2f} | {steady:.3f} | {steady / base:.2f} | "
                  f"{first / steady:.1f} | {multi / steady:.2f} |", flush=True)
            del ex


if __name__ == "__main__":
    main()
