"""Relevance methods ÷ a plain input gradient, measured in the same run: time and peak memory.

    python benchmarks/bench_engine.py [--models vgg16 resnet50 efficientnetb0 vit] [--batch 1 8]
                                      [--methods sglrp clrp deep_taylor.bounded lrp.epsilon] [--repeats 5]

Models: keras.applications VGG16, ResNet50 and EfficientNetB0 at 224 x 224 (random weights, logits head) and
the bundled ViT demo at its 64 x 64. The baseline is a ``tape.gradient`` of the target logit through the Keras
model, compiled with ``tf.function``. For each model, batch and method it prints:

- new image ÷ gradient: every call explains images never seen before (no per-image state can be reused),
  timed once the engine's per-image state cache is full;
- while filling ÷ gradient: the new-image calls before that (the cache starts empty for each method). Each
  pages in fresh memory for the state it keeps: at batch 8 a state is 0.5-1 GB, and the first few batches cost
  more than the later ones, which reuse the memory of evicted states;
- class switch ÷ gradient: another class of images already explained (LRP keeps their forward state);
- first ÷ steady: the first call (reading the model, the replay check; its passes run as Python and compile in
  the background afterwards, ``compile="background"``) ÷ a new-image call; the steady calls start once the
  passes are compiled (``Explainer.wait_compiled``);
- first ÷ gradient's first: the same first call ÷ the plain gradient's first call (which traces its graph);
- compiled on the call ÷ steady: the first call of ``compile="first_call"``, which traces its passes and
  waits for them (what every first call did before background compilation) ÷ a new-image call. Each of the
  two first calls reads the model afresh (the engine's per-model store is emptied before each);
- 5 targets ÷ 1: five classes per image in one call ÷ one class (new images);
- peak RSS ÷ gradient: the peak resident memory of a process that builds the model and runs the method
  (a new batch, then class switches) ÷ that of a process that runs the plain gradient the same way.

Machines here are noisy: each time ratio is the median over ``--repeats`` pairs of runs made alternately with
the baseline, so both sides see the same background load. Results caching is off (``cache=None``).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

DEFAULT_METHODS = ["sglrp", "clrp", "deep_taylor.bounded", "lrp.epsilon"]
MODELS = ["vgg16", "resnet50", "efficientnetb0", "vit"]


def build(name: str):
    import keras
    if name == "vit":
        from sglrp_widgets import demo
        return demo.load_model("vit")
    ctor = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50,
            "efficientnetb0": keras.applications.EfficientNetB0}[name]
    return ctor(weights=None, classifier_activation=None)


def images(model, batch: int, seed: int = 0) -> np.ndarray:
    shape = tuple(model.input_shape[1:])
    return np.random.default_rng(seed).uniform(0, 255, (batch,) + shape).astype("float32")


def plain_gradient(model):
    import tensorflow as tf

    @tf.function
    def grad(x, t):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = tf.reduce_sum(tf.gather(model(x, training=False), t, batch_dims=1))
        return tape.gradient(score, x)
    return lambda x, t: grad(tf.constant(x), tf.constant(t)).numpy()


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def paired(fn, baseline, repeats: int, stop=None) -> tuple[float, float]:
    """Median time of ``fn`` and median of the ratios fn ÷ baseline, the two run alternately; ``stop()``, asked
    after each pair, may end the series early."""
    times, ratios = [], []
    for _ in range(repeats):
        b = timed(baseline)
        t = timed(fn)
        times.append(t)
        ratios.append(t / b)
        if stop is not None and stop():
            break
    return statistics.median(times), statistics.median(ratios)


def cache_evicted(cache):
    """A ``stop`` for :func:`paired`: true once a call left ``cache`` no fuller (it evicted a state; from then
    on a new state takes the memory of an evicted one instead of fresh pages)."""
    last = [len(cache)]

    def stop() -> bool:
        grew, last[0] = len(cache) > last[0], len(cache)
        return not grew
    return stop


def peak_rss_child(model_name: str, method: str, batch: int) -> None:
    """Build the model, run ``method`` (or the plain gradient) as a user would, print the peak RSS in MB."""
    model = build(model_name)
    x = images(model, batch)
    classes = int(model.output_shape[-1])
    targets = np.arange(batch) % classes
    if method == "gradient-baseline":
        grad = plain_gradient(model)
        for k in range(4):
            grad(x + k, (targets + k) % classes)
    else:
        from sglrp_widgets.engine import Explainer
        ex = Explainer(model, method, cache=None)
        ex(x, targets)
        for k in range(1, 4):                       # class switches on the same images
            ex(x, (targets + k) % classes)
    print(json.dumps({"peak_rss_mb": high_water_mb()}))


def high_water_mb() -> float:
    """This process's peak resident memory. ``/proc/self/status`` VmHWM belongs to the process's own address
    space; ``getrusage``'s ru_maxrss survives fork + exec, so a child spawned by a large parent would report
    the parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(model_name: str, method: str, batch: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--rss-child", model_name, method, str(batch)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-memory processes")
    ap.add_argument("--rss-child", nargs=3, metavar=("MODEL", "METHOD", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        peak_rss_child(args.rss_child[0], args.rss_child[1], int(args.rss_child[2]))
        return

    import keras
    import tensorflow as tf

    from sglrp_widgets.caching import STATES
    from sglrp_widgets.engine import _MODELS, Explainer

    print(f"tf={tf.__version__} keras={keras.__version__} cpus={os.cpu_count()} repeats={args.repeats} (medians)")
    print()
    print("| model | batch | method | new image s | new image ÷ gradient | while filling ÷ gradient | "
          "class switch ÷ gradient | first ÷ steady | first ÷ gradient's first | compiled on the call ÷ steady | "
          "5 targets ÷ 1 | peak RSS ÷ gradient |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model_name in args.models:
        model = build(model_name)
        classes = int(model.output_shape[-1])
        for batch in args.batch:
            x = images(model, batch)
            targets = (np.arange(batch) * 7 % classes).astype("int32")
            grad = plain_gradient(model)
            baseline = lambda: grad(x, targets)  # noqa: E731
            first_base = timed(baseline)
            base = statistics.median(timed(baseline) for _ in range(args.repeats))
            base_rss = None if args.no_rss else peak_rss(model_name, "gradient-baseline", batch)
            print(f"| {model_name} | {batch} | plain input gradient | {base:.3f} | 1.00 | | | "
                  f"{first_base / base:.1f} | 1.00 ({first_base:.2f} s) | | | "
                  f"{'' if base_rss is None else f'1.00 ({base_rss:.0f} MB)'} |", flush=True)
            counter = iter(range(1, 10**6))

            def fresh():   # images never seen before: no per-image state can be reused
                return x + np.float32(next(counter) * 1e-3)

            for method in args.methods:
                STATES.clear()
                _MODELS.pop(model, None)          # both first calls read the model afresh
                on_call = functools.partial(Explainer, model, method, cache=None, compile="first_call")
                first_compiled = timed(lambda: on_call()(fresh(), targets))
                _MODELS.pop(model, None)
                STATES.clear()
                ex = Explainer(model, method, cache=None)
                first = timed(lambda: ex(fresh(), targets))
                ex.wait_compiled()
                _, filling = paired(lambda: ex(fresh(), targets), baseline, 8, stop=cache_evicted(STATES))
                new_image, new_ratio = paired(lambda: ex(fresh(), targets), baseline, args.repeats)
                ex(x, targets)
                _, switch_ratio = paired(lambda: ex(x, (targets + next(counter)) % classes), baseline,
                                         args.repeats)
                five = lambda: [[(int(v) + j * 7 + next(counter)) % classes for j in range(5)]  # noqa: E731
                                for v in targets]
                _, multi = paired(lambda: ex(fresh(), five()), lambda: ex(fresh(), targets),
                                  max(3, args.repeats // 2))
                rss = "" if base_rss is None else f"{peak_rss(model_name, method, batch) / base_rss:.2f}"
                print(f"| {model_name} | {batch} | {method} | {new_image:.3f} | {new_ratio:.2f} | {filling:.2f} | "
                      f"{switch_ratio:.2f} | {first / new_image:.1f} | {first / first_base:.2f} ({first:.2f} s) | "
                      f"{first_compiled / new_image:.1f} | {multi:.2f} | {rss} |", flush=True)
        del model
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
