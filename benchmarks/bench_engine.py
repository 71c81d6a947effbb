"""Relevance pass ÷ plain input-gradient pass, measured in the same run (VGG16, random weights, CPU).

    python benchmarks/bench_engine.py [--batch 1 8] [--repeats 5] [--methods lrp.epsilon deep_taylor.bounded ...]

Prints a markdown table of median seconds per call and the ratio to the plain gradient (a `tape.gradient`
of the target logit through the Keras model, compiled with tf.function) for a new image every call and for
a class switch on an image already seen (LRP methods keep its forward state), plus first-call ÷ new-image
and five-targets ÷ one-target (new images) ratios. Machines here are noisy: each ratio is the median over --repeats pairs of
runs made alternately (method, baseline), so both sides of a ratio see the same background load.
Results caching is off (cache=None): every timed call computes.
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


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def paired(fn, baseline, repeats: int) -> tuple[float, float]:
    """Median time of ``fn`` and median of the ratios fn ÷ baseline, the two run alternately.

    Alternating makes each ratio compare runs made under the same background load.
    """
    times, ratios = [], []
    for _ in range(repeats):
        b = timed(baseline)
        t = timed(fn)
        times.append(t)
        ratios.append(t / b)
    return statistics.median(times), statistics.median(ratios)


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
    print("| batch | method | first call s | new image s | ÷ gradient | class switch s | ÷ gradient | "
          "first ÷ new image | 5 targets ÷ 1 |")
    print("|---|---|---|---|---|---|---|---|---|")
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

        baseline = lambda: plain_gradient(x, t).numpy()  # noqa: E731
        first_base = timed(baseline)
        base = statistics.median(timed(baseline) for _ in range(args.repeats))
        print(f"| {batch} | plain input gradient (baseline) | {first_base:.2f} | {base:.3f} | 1.00 | | | "
              f"{first_base / base:.1f} | |")
        xs, targets = x.numpy(), t.numpy()
        counter = iter(range(1, 10**6))

        def fresh():   # a new image every call: no per-image state can be reused
            return xs + np.float32(next(counter) * 1e-3)

        for method in args.methods:
            ex = Explainer(model, method, cache=None)
            first = timed(lambda: ex(fresh(), targets))
            new_image, new_ratio = paired(lambda: ex(fresh(), targets), baseline, args.repeats)
            ex(xs, targets)
            switch, switch_ratio = paired(lambda: ex(xs, (targets + next(counter)) % 1000), baseline, args.repeats)
            five = lambda: [[(int(v) + j * 7 + next(counter)) % 1000 for j in range(5)] for v in targets]  # noqa
            _, multi = paired(lambda: ex(fresh(), five()), lambda: ex(fresh(), targets), max(3, args.repeats // 2))
            print(f"| {batch} | {method} | {first:.2f} | {new_image:.3f} | {new_ratio:.2f} | {switch:.3f} | "
                  f"{switch_ratio:.2f} | {first / new_image:.1f} | {multi:.2f} |", flush=True)


if __name__ == "__main__":
    main()
