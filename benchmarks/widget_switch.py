"""Kernel time and bytes sent for one class switch in RelevanceExplorer, and the wait for a click made
while a slow method runs.

The browser's message is fed through the widget's comm callback (``_handle_msg``), exactly as
from the front end, and everything the kernel sends back is recorded at ``Widget._send``
(JSON state + binary buffers). "kernel ms" is from receiving the message until the heatmap
message is sent (worker thread included); "engine ms" is the engine call inside it.

Models: the bundled demo model (64x64) and ``keras.applications.VGG16(weights=None,
classifier_activation=None)`` at 224x224 (random weights: no download).

    python benchmarks/widget_switch.py [--method sglrp] [--skip-vgg] [--repeats 3] [--slow integrated_gradients]

Measured on this project's 2-core CPU shared with other jobs (load average about 8; TF 2.21), medians of 3,
the widget before this change (one worker, its own result cache, int8 maps) and after it, run one after
the other with this script:

| model / scenario                                  | before              | after               |
|---------------------------------------------------|---------------------|---------------------|
| demo 64x64, uncached class switch (kernel ms)     | 25.2 (engine 22.9)  | 17.7 (engine 14.9)  |
| demo 64x64, cached class switch (kernel ms)       | 3.9                 | 6.3                 |
| VGG16 224x224, uncached class switch (kernel ms)  | 566.6 (engine 561.5)| 625.1 (engine 616.9)|
| VGG16 224x224, cached class switch (kernel ms)    | 1.9                 | 34.1                |
| bytes per switch, VGG16 (JSON + heatmap buffer)   | 50,646 (int8)       | 101,292 (float16)   |
| VGG16: back to SGLRP, prefetched class, while     | 33.4 s = 1.14 x IG  | 0.18 s = 0.00 x IG  |
|   integrated_gradients runs (x IG alone, same run)|                     |                     |
| VGG16: back to SGLRP, new class, while IG runs    | 38.5 s = 1.32 x IG  | 1.9 s = 0.05 x IG   |

A cached switch now goes through the engine's result cache (the widget keeps none): its cost is the
engine's cache lookup (a weights fingerprint and an image digest) plus the colour-scale percentiles.
During a slow call the lookup's fingerprint (a ``tf.function``) queues behind the running call's
TensorFlow ops, which is most of the 0.18 s above.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


class Wire:
    def __init__(self, w):
        self.w, self.msgs = w, []
        w._send = lambda msg, buffers=None: self.msgs.append((msg, list(buffers or [])))

    def switch(self, **state):
        self.msgs.clear()
        t0 = time.perf_counter()
        self.w._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
                            "buffers": []})
        self.w.wait(900)
        # time of the heatmap message = when the worker published (wait() adds only queue latency)
        dt = time.perf_counter() - t0
        js = sum(len(json.dumps(m.get("state", m), default=str)) for m, _ in self.msgs)
        bufs = sum(len(b) for _, bb in self.msgs for b in bb)
        return dt, js, bufs, dict(self.w.heatmap_meta)


def bench(name, model, images, preprocess, class_names, method, repeats):
    from sglrp_widgets.widget import RelevanceExplorer

    t0 = time.perf_counter()
    w = RelevanceExplorer(model, images, preprocess=preprocess, class_names=class_names,
                          method=method, prefetch=False)
    t_init = time.perf_counter() - t0
    if w.error:
        print(f"{name}: error: {w.error}")
        return
    wire = Wire(w)
    order = [p["index"] for p in w.predictions]
    top1 = order[0]
    others = [c for c in range(len(class_names)) if c != top1]
    H, W = w.heatmap_meta["height"], w.heatmap_meta["width"]
    print(f"\n== {name}: {H}x{W}, method={method}, classes={len(class_names)}")
    print(f"constructor incl. first map (trace + compute): {1000 * t_init:8.1f} ms")
    rows = []
    for r in range(repeats):
        c = others[r % len(others)]
        dt, js, bufs, meta = wire.switch(target=int(c), request_id=2 * r + 1)
        assert meta["target"] == c and not w.error, w.error
        rows.append(("uncached", dt, js, bufs, meta["seconds"], meta["cached"]))
        dt, js, bufs, meta = wire.switch(target=int(top1), request_id=2 * r + 2)
        assert meta["target"] == top1 and meta["cached"], meta
        rows.append(("cached", dt, js, bufs, meta["seconds"], meta["cached"]))
    print(f"{'switch':9s} {'kernel ms':>10s} {'engine ms':>10s} {'JSON B':>8s} {'binary B':>9s} {'total B':>8s}")
    for kind, dt, js, bufs, secs, cached in rows:
        eng = "-" if kind == "cached" else f"{1000 * secs:10.1f}"
        print(f"{kind:9s} {1000 * dt:10.1f} {eng:>10s} {js:8d} {bufs:9d} {js + bufs:8d}")
    for kind in ("uncached", "cached"):
        ts = [r[1] for r in rows if r[0] == kind]
        print(f"median {kind:8s}: {1000 * float(np.median(ts)):8.1f} ms kernel, "
              f"{int(np.median([r[2] + r[3] for r in rows if r[0] == kind]))} bytes sent")
    print(f"heatmap buffer: {rows[0][3]} bytes for {H}x{W} values (a float32 JSON list would be ~{H * W * 10} bytes)")
    # batched top-k (what prefetch does after the first map)
    from sglrp_widgets.engine import Explainer

    ex = Explainer(model, method, preprocess=preprocess)
    x = np.asarray(preprocess(np.asarray(images[:1], np.float32)), np.float32)
    k = min(5, len(class_names))
    ex(x, targets=[order[:k]])  # warm the nested-target signature
    t0 = time.perf_counter()
    ex(x, targets=[[(c + 1) % len(class_names) for c in order[:k]]])
    tb = time.perf_counter() - t0
    print(f"batched top-{k} in one call: {1000 * tb:8.1f} ms ({1000 * tb / k:.1f} ms per class)")
    w.close()


def _wait_for(w, pred, timeout=600.0):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if pred(dict(w.heatmap_meta)):
            return time.perf_counter() - t0
        time.sleep(0.002)
    raise TimeoutError("the widget did not publish the expected map")


def bench_switch_during_slow(model, images, preprocess, class_names, slow, repeats):
    """The user starts a slow method, then goes back to SGLRP and another class (prefetched or not).

    Prints the time from the second click until its map is published, next to the slow method's own
    compute time (measured alone in the same run): a widget whose clicks wait behind the slow call shows
    a ratio near 1, one that serves the click at once a ratio near 0. Every slow call explains a class
    that was not computed before (the engine caches results).
    """
    from sglrp_widgets.widget import RelevanceExplorer

    w = RelevanceExplorer(model, images, preprocess=preprocess, class_names=class_names, method="sglrp")
    w.wait(900)
    order = [p["index"] for p in w.predictions]
    fresh = iter([c for c in range(len(class_names)) if c not in order])
    rid = [100]

    def click(**state):
        rid[0] += 1
        w._handle_msg({"content": {"data": {"method": "update", "buffer_paths": [],
                                            "state": {**state, "request_id": rid[0]}}}, "buffers": []})

    def until(method, target):
        return _wait_for(w, lambda m: m.get("method") == method and m.get("target") == target)

    click(method=slow, params={}, target=next(fresh))  # trace the slow method once
    w.wait(900)
    slow_alone = []
    for _ in range(repeats):
        c = next(fresh)
        click(method=slow, params={}, target=c)
        slow_alone.append(until(slow, c))
        w.wait(900)
    rows = []
    for _ in range(repeats):
        for kind in ("prefetched class", "new class"):
            click(method="sglrp", params={}, target=order[0])
            until("sglrp", order[0])
            w.wait(900)  # the top-k of SGLRP are computed ahead
            click(method=slow, params={}, target=next(fresh))
            time.sleep(0.3)  # the slow method is running
            c = order[1] if kind == "prefetched class" else next(fresh)
            click(method="sglrp", params={}, target=c)
            rows.append((kind, until("sglrp", c)))
            w.wait(900)
    base = float(np.median(slow_alone))
    print(f"\n== switch while {slow} runs (VGG16): {slow} alone {1000 * base:.0f} ms (median of {repeats})")
    for kind in ("prefetched class", "new class"):
        ts = [dt for k, dt in rows if k == kind]
        med = float(np.median(ts))
        print(f"back to sglrp, {kind:16s}: {1000 * med:8.1f} ms = {med / base:.2f} x the slow method alone "
              f"({', '.join(f'{1000 * t:.0f}' for t in ts)} ms)")
    w.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="sglrp")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-vgg", action="store_true")
    ap.add_argument("--slow", default="integrated_gradients",
                    help="the slow method started before switching back (VGG16 only)")
    args = ap.parse_args(argv)

    import keras

    from sglrp_widgets import demo

    images, _, _ = demo.make_scenes(2, objects=1, seed=0)
    bench("demo model", demo.load_model(), images, demo.preprocess, list(demo.class_names),
          args.method, args.repeats)

    if not args.skip_vgg:
        from sglrp_widgets.widget import imagenet_class_names

        keras.utils.set_random_seed(0)
        vgg = keras.applications.VGG16(weights=None, classifier_activation=None)
        rng = np.random.default_rng(0)
        imgs = (rng.random((1, 224, 224, 3)) * 255).astype(np.uint8)
        pre = keras.applications.vgg16.preprocess_input
        vgg_pre = lambda x: pre(np.array(x, np.float32))  # noqa: E731
        bench("VGG16 (random weights)", vgg, imgs, vgg_pre, imagenet_class_names(), args.method, args.repeats)
        bench_switch_during_slow(vgg, imgs, vgg_pre, imagenet_class_names(), args.slow, args.repeats)


if __name__ == "__main__":
    main()
