"""explain_dataset throughput and memory: images per second, ÷ a plain gradient loop; 1 vs 2 workers; RSS.

    python benchmarks/dataset_throughput.py [--images 512] [--batch 1 8 32] [--repeats 3] [--rss-images 10000]

Model: the bundled demo CNN (64×64 RGB, 43k parameters). Data: demo scenes (uint8) with
``preprocess=demo.preprocess``; every run writes a fresh Zarr store (maps float32, previews, flags).

1. **Batch size.** For each batch size, ``explain_dataset`` with ``sglrp`` and with ``gradient`` (targets
   top-1), each timed next to a *plain gradient loop* over the same images and batch size: a compiled
   ``tape.gradient`` of the top logit through the Keras model, results left in memory (no store). Each
   ratio is the median over ``--repeats`` pairs run alternately, so both sides see the same background load.
2. **Workers.** The same dataset (batch 32) by one process (default strategy) and by two processes with
   ``MultiWorkerMirroredStrategy`` on 127.0.0.1 (``TF_CONFIG``); time of the ``explain_dataset`` call in the
   chief, which returns once both shards are written. Medians over ``--repeats`` runs, alternating.
3. **Memory.** ``sglrp`` over ``--rss-images`` scenes rendered on the fly by a ``tf.data`` generator (the data
   never sit in memory): resident set size printed every 1000 images.

Prints markdown; ``--write`` also saves it to benchmarks/results/dataset_throughput.md.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _setup  # noqa: F401  (quiet TF, repository on sys.path)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sglrp_widgets import demo  # noqa: E402
from sglrp_widgets.dataset import explain_dataset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "dataset_throughput.md"

_WORKER = """
import os, sys, time, json
import numpy as np
sys.path.insert(0, {root!r})
import tensorflow as tf
from sglrp_widgets import demo
from sglrp_widgets.dataset import explain_dataset
strategy = tf.distribute.MultiWorkerMirroredStrategy() if os.environ.get("TF_CONFIG") else None
x = np.load(sys.argv[1], mmap_mode="r")
t = time.perf_counter()
explain_dataset(demo.load_model(), x, "sglrp", out=sys.argv[2], batch_size=32, preprocess=demo.preprocess,
                strategy=strategy, progress=False)
print(json.dumps({{"seconds": time.perf_counter() - t}}), flush=True)
"""


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def plain_gradient_loop(model, x: np.ndarray, batch: int):
    @tf.function(input_signature=[tf.TensorSpec((None,) + x.shape[1:], tf.float32)])
    def grad(xb):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            z = model(xb, training=False)
            score = tf.reduce_sum(tf.reduce_max(z, axis=1))
        return tape.gradient(score, xb)

    def run():
        for s in range(0, len(x), batch):
            grad(demo.preprocess(x[s:s + batch])).numpy()
    run()  # trace
    return run


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def batch_table(model, images, batches, repeats, tmp) -> list[str]:
    n = len(images)
    lines = ["| batch | method | images/s (median) | ÷ plain gradient loop, time ratio (median) |", "|---|---|---|---|"]
    for batch in batches:
        base = plain_gradient_loop(model, images, batch)
        for method in ("sglrp", "gradient"):
            times, ratios = [], []
            for r in range(repeats):
                b = timed(base)
                out = os.path.join(tmp, f"{method}_{batch}_{r}.zarr")
                t = timed(lambda: explain_dataset(model, images, method, out=out, batch_size=batch,
                                                  preprocess=demo.preprocess, progress=False))
                times.append(t)
                ratios.append(t / b)
            lines.append(f"| {batch} | `{method}` | {n / statistics.median(times):.0f} | "
                         f"{statistics.median(ratios):.2f} |")
            print(lines[-1], flush=True)
        lines.append(f"| {batch} | plain gradient loop (baseline) | {n / timed(base):.0f} | 1 |")
        print(lines[-1], flush=True)
    return lines


def _free_ports(k: int) -> list[int]:
    socks = [socket.socket() for _ in range(k)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _workers(data: str, out: str, count: int, script: str) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    envs = [env]
    if count > 1:
        cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(count)]}
        envs = [dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
                for i in range(count)]
    procs = [subprocess.Popen([sys.executable, script, data, out], env=e, stdout=subprocess.PIPE, text=True)
             for e in envs]
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a worker failed: {[p.returncode for p in procs]}")
    return json.loads(outs[0].strip().splitlines()[-1])["seconds"]      # the chief: the whole store


def worker_table(images, repeats, tmp) -> list[str]:
    data = os.path.join(tmp, "images.npy")
    np.save(data, images)
    script = os.path.join(tmp, "worker.py")
    Path(script).write_text(_WORKER.format(root=str(Path(__file__).resolve().parents[1])))
    times = {1: [], 2: []}
    for r in range(repeats):
        for count in (1, 2):
            times[count].append(_workers(data, os.path.join(tmp, f"w{count}_{r}.zarr"), count, script))
    n = len(images)
    lines = ["| workers | seconds (median) | images/s | ÷ 1 worker, time ratio |", "|---|---|---|---|"]
    for count in (1, 2):
        med = statistics.median(times[count])
        lines.append(f"| {count} | {med:.1f} | {n / med:.0f} | {med / statistics.median(times[1]):.2f} |")
        print(lines[-1], flush=True)
    return lines


def rss_table(model, n: int, tmp) -> list[str]:
    block = 500

    def scenes():
        for s in range(0, n, block):
            yield from demo.make_scenes(min(block, n - s), seed=100_000 + s // block)[0]

    ds = tf.data.Dataset.from_generator(scenes, output_signature=tf.TensorSpec((64, 64, 3), tf.uint8))
    ds = ds.apply(tf.data.experimental.assert_cardinality(n))
    out = os.path.join(tmp, "rss.zarr")
    samples: list[tuple[int, float]] = []
    stop = threading.Event()

    def watch():
        import zarr

        last = -1
        while not stop.is_set():
            time.sleep(0.5)
            try:
                done = int(zarr.open_group(out, mode="r")["done"][...].sum()) * 64
            except Exception:  # noqa: BLE001 - not created yet
                continue
            if done // 1000 != last // 1000 or last < 0:
                samples.append((done, rss_mb()))
                print(f"  {done:>6} images: RSS {samples[-1][1]:.0f} MB", flush=True)
                last = done

    samples.append((0, rss_mb()))
    th = threading.Thread(target=watch, daemon=True)
    th.start()
    t = timed(lambda: explain_dataset(model, ds, "sglrp", out=out, batch_size=32, chunk_size=64,
                                      preprocess=demo.preprocess, progress=False))
    stop.set()
    th.join()
    samples.append((n, rss_mb()))
    lines = [f"{n} images in {t:.0f} s ({n / t:.0f} images/s), chunks of 64:", "",
             "| images done | RSS MB |", "|---|---|"]
    lines += [f"| {d} | {m:.0f} |" for d, m in samples]
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-images", type=int, default=10_000)
    ap.add_argument("--skip", nargs="*", default=[], choices=["batch", "workers", "rss"])
    ap.add_argument("--write", action="store_true", help="save the tables to " + str(RESULTS))
    args = ap.parse_args(argv)

    model = demo.load_model()
    images = demo.make_scenes(args.images, seed=42)[0]
    head = [f"# explain_dataset throughput (demo CNN, 64×64, {args.images} images, {os.cpu_count()} CPU cores, "
            f"TF {tf.__version__})", "",
            f"`python benchmarks/dataset_throughput.py --images {args.images} --batch "
            f"{' '.join(map(str, args.batch))} --repeats {args.repeats} --rss-images {args.rss_images}`", ""]
    out = list(head)
    with tempfile.TemporaryDirectory() as tmp:
        if "batch" not in args.skip:
            out += ["## Batch size", ""] + batch_table(model, images, args.batch, args.repeats, tmp) + [""]
        if "workers" not in args.skip:
            out += ["## Workers (batch 32, sglrp)", ""] + worker_table(images, args.repeats, tmp) + [""]
        if "rss" not in args.skip:
            out += ["## Memory (sglrp, tf.data generator)", ""] + rss_table(model, args.rss_images, tmp) + [""]
    text = "\n".join(out)
    print(text)
    if args.write:
        RESULTS.write_text(text + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
