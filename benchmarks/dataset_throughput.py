"""explain_dataset throughput and memory: images per second next to plain loops; 1 vs 2 workers; RSS.

    python benchmarks/dataset_throughput.py [--images 1024] [--worker-images 2048] [--batch 1 8 32]
                                            [--repeats 3] [--rss-images 10000] [--write]

Model: the bundled demo CNN (64×64 RGB, 43k parameters). Data: demo scenes (uint8) with
``preprocess=demo.preprocess``; every run writes a fresh Zarr store (maps float32, previews, flags).

1. **Batch size.** For each batch size, ``explain_dataset`` with ``sglrp`` and with ``gradient`` (targets
   top-1). Steady-state time per image = (t(N images) - t(one chunk of 64)) / (N - 64), so the one-time
   start-up (tracing, model fingerprint, store creation; reported) does not count. Next to it, in the same
   repeat: the same ``Explainer`` calls without a store, and a *plain gradient loop* (a compiled
   ``tape.gradient`` of the top logit through the Keras model), both traced before timing. Ratios are
   medians over ``--repeats`` repeats made of all four runs, so both sides see the same background load.
2. **Workers.** The same dataset (batch 32, sglrp) by one process (default strategy) and by two processes
   with ``MultiWorkerMirroredStrategy`` on 127.0.0.1 (``TF_CONFIG``), with TensorFlow's default thread
   pools and with the cores split between the workers; wall time of the chief's ``explain_dataset`` call,
   which returns once both shards are written (start-up included). Medians over ``--repeats``.
3. **Memory.** In a fresh process, ``sglrp`` over ``--rss-images`` scenes rendered on the fly by a
   ``tf.data`` generator (the data never sit in memory): resident set size about every 1000 images.

Prints markdown; ``--write`` also saves it to benchmarks/results/dataset_throughput.md.
"""
from __future__ import annotations

import argparse
import json
import os
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

from sglrp_widgets import Explainer, demo  # noqa: E402
from sglrp_widgets.dataset import explain_dataset, local_worker_configs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "dataset_throughput.md"

_WORKER = """
import os, sys, time, json
import numpy as np
sys.path.insert(0, {root!r})
import tensorflow as tf
from sglrp_widgets import demo
from sglrp_widgets.dataset import explain_dataset
threads = int(os.environ.get("BENCH_THREADS", "0"))
if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
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
    """A compiled ``tape.gradient`` of the top logit over ``x`` in batches: what one would write by hand."""
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


def explainer_loop(model, method: str, x: np.ndarray, batch: int):
    """The same Explainer calls explain_dataset makes, results left in memory (no store)."""
    ex = Explainer(model, method, preprocess=demo.preprocess, cache=None)

    def run():
        for s in range(0, len(x), batch):
            ex(demo.preprocess(x[s:s + batch]))
    run()  # trace
    return run


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def batch_table(model, images, batches, repeats, tmp) -> list[str]:
    """Steady-state throughput: (t(N) - t(one chunk)) / (N - chunk) per image, so tracing and store creation
    (reported as start-up) do not count; the loops are traced before they are timed."""
    n, small = len(images), 64
    lines = ["| batch | method | explain_dataset images/s | start-up s | Explainer loop images/s | "
             "plain gradient loop images/s | ÷ Explainer loop | ÷ plain gradient loop |",
             "|---|---|---|---|---|---|---|---|"]
    for batch in batches:
        base = plain_gradient_loop(model, images, batch)
        for method in ("sglrp", "gradient"):
            loop = explainer_loop(model, method, images, batch)
            per_image, startup, per_loop, per_base, r_loop, r_base = [], [], [], [], [], []
            for r in range(repeats):
                t_base, t_loop = timed(base), timed(loop)
                t_small = timed(lambda: explain_dataset(model, images[:small], method, out=os.path.join(
                    tmp, f"s_{method}_{batch}_{r}.zarr"), batch_size=batch, chunk_size=max(small, batch),
                    preprocess=demo.preprocess, progress=False))
                t_full = timed(lambda: explain_dataset(model, images, method, out=os.path.join(
                    tmp, f"f_{method}_{batch}_{r}.zarr"), batch_size=batch, chunk_size=max(small, batch),
                    preprocess=demo.preprocess, progress=False))
                per = (t_full - t_small) / (n - small)
                per_image.append(per)
                startup.append(t_small - small * per)
                per_loop.append(t_loop / n)
                per_base.append(t_base / n)
                r_loop.append(per * n / t_loop)
                r_base.append(per * n / t_base)
            med = statistics.median
            lines.append(f"| {batch} | `{method}` | {1 / med(per_image):.0f} | {med(startup):.1f} | "
                         f"{1 / med(per_loop):.0f} | {1 / med(per_base):.0f} | {med(r_loop):.2f} | "
                         f"{med(r_base):.2f} |")
            print(lines[-1], flush=True)
    return lines


def _workers(data: str, out: str, count: int, script: str, threads: int = 0) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", BENCH_THREADS=str(threads))
    envs = [env]
    if count > 1:
        envs = [dict(env, TF_CONFIG=config) for config in local_worker_configs(count)]
    procs = [subprocess.Popen([sys.executable, script, data, out], env=e, stdout=subprocess.PIPE, text=True)
             for e in envs]
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a worker failed: {[p.returncode for p in procs]}")
    return json.loads(outs[0].strip().splitlines()[-1])["seconds"]      # the chief: the whole store


def worker_table(images, repeats, tmp) -> list[str]:
    """Wall time of the chief's explain_dataset call (it returns once every shard is written)."""
    data = os.path.join(tmp, "images.npy")
    np.save(data, images)
    script = os.path.join(tmp, "worker.py")
    Path(script).write_text(_WORKER.format(root=str(Path(__file__).resolve().parents[1])))
    cores = os.cpu_count() or 1
    setups = [("1 worker", 1, 0), ("2 workers", 2, 0), (f"2 workers, {max(1, cores // 2)} thread(s) each", 2,
                                                         max(1, cores // 2))]
    times: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    for r in range(repeats):
        for name, count, threads in setups:
            times[name].append(_workers(data, os.path.join(tmp, f"w{count}_{threads}_{r}.zarr"), count, script,
                                        threads))
    n = len(images)
    one = statistics.median(times["1 worker"])
    lines = ["| setup | seconds (median) | images/s | ÷ 1 worker, time ratio |", "|---|---|---|---|"]
    for name, _, _ in setups:
        med = statistics.median(times[name])
        lines.append(f"| {name} | {med:.1f} | {n / med:.0f} | {med / one:.2f} |")
        print(lines[-1], flush=True)
    return lines


def rss_table(model, method: str, n: int, tmp) -> list[str]:
    block = 500

    def scenes():
        for s in range(0, n, block):
            yield from demo.make_scenes(min(block, n - s), seed=100_000 + s // block)[0]

    ds = tf.data.Dataset.from_generator(scenes, output_signature=tf.TensorSpec((64, 64, 3), tf.uint8))
    ds = ds.apply(tf.data.experimental.assert_cardinality(n))
    out = os.path.join(tmp, "rss.zarr")
    samples: list[tuple[str, float]] = [("model loaded", rss_mb())]
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
            if last < 0 or done // 1000 != last // 1000:
                samples.append((str(done) if done else "store created", rss_mb()))
                print(f"  {samples[-1][0]:>13}: RSS {samples[-1][1]:.0f} MB", flush=True)
                last = done

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    t = timed(lambda: explain_dataset(model, ds, method, out=out, batch_size=32, chunk_size=64,
                                      preprocess=demo.preprocess, progress=False))
    stop.set()
    th.join()
    samples.append((f"{n} (returned)", rss_mb()))
    return [f"`{method}`: {n} images in {t:.0f} s ({n / t:.0f} images/s), chunks of 64", "",
            "| images done | RSS MB |", "|---|---|"] + [f"| {d} | {m:.0f} |" for d, m in samples]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--worker-images", type=int, default=2048)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-images", type=int, default=10_000)
    ap.add_argument("--rss-methods", nargs="+", default=["sglrp", "gradient"])
    ap.add_argument("--only", choices=["batch", "workers", "rss"], help="run one part (rss runs in a fresh "
                                                                        "process otherwise)")
    ap.add_argument("--write", action="store_true", help="save the tables to " + str(RESULTS))
    args = ap.parse_args(argv)

    parts = [args.only] if args.only else ["batch", "workers", "rss"]
    out = [] if args.only else [
        f"# explain_dataset throughput (demo CNN, 64×64, {os.cpu_count()} CPU cores, TF {tf.__version__})", "",
        f"`python benchmarks/dataset_throughput.py --images {args.images} --worker-images {args.worker_images} "
        f"--batch {' '.join(map(str, args.batch))} --repeats {args.repeats} --rss-images {args.rss_images}`", "",
        "Shared 2-core machine (other jobs running): medians; read the ratios, not single numbers.", ""]
    model = demo.load_model()
    with tempfile.TemporaryDirectory() as tmp:
        if "batch" in parts:
            images = demo.make_scenes(args.images, seed=42)[0]
            out += [f"## Batch size ({args.images} images, top-1 targets; medians of {args.repeats})", ""]
            out += batch_table(model, images, args.batch, args.repeats, tmp) + [""]
        if "workers" in parts:
            images = demo.make_scenes(args.worker_images, seed=43)[0]
            out += [f"## Workers ({args.worker_images} images, batch 32, sglrp; 127.0.0.1)", ""]
            out += worker_table(images, args.repeats, tmp) + [""]
        if "rss" in parts and args.only:
            out += rss_table(model, args.rss_methods[0], args.rss_images, tmp)
        elif "rss" in parts:          # fresh processes: nothing from the parts above in their memory
            out += [f"## Memory ({args.rss_images} scenes from a tf.data generator, batch 32, a fresh process "
                    "per method)", ""]
            for method in args.rss_methods:
                child = subprocess.run([sys.executable, __file__, "--only", "rss", "--rss-images",
                                        str(args.rss_images), "--rss-methods", method],
                                       capture_output=True, text=True, check=True)
                print(child.stdout, flush=True)
                out += [child.stdout.split("@@TABLE@@")[-1].strip(), ""]
    text = "\n".join(out)
    if args.only == "rss":
        print("@@TABLE@@\n" + text)
        return
    print(text)
    if args.write:
        RESULTS.write_text(text + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
