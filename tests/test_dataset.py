"""explain_dataset: the store against Explainer, every data source and target mode, resuming after a real
kill, two MultiWorkerMirroredStrategy workers on 127.0.0.1, a MirroredStrategy over two devices, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr")
zarr = pytest.importorskip("zarr")

from sglrp_widgets import ExplainError, Explainer, cli, demo  # noqa: E402
from sglrp_widgets.dataset import explain_dataset, local_worker_configs, open_store  # noqa: E402
from scenes import scene_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROW_ARRAYS = ("relevance", "logits", "targets", "ids", "labels", "heatmaps", "heatmap_scale", "thumbnails")


@pytest.fixture(scope="module")
def model():
    return demo.load_model()


@pytest.fixture(scope="module")
def scenes():
    images, labels, _ = demo.make_scenes(40, seed=11)
    return images, labels[:, 0]


def _close(a, b, rtol=1e-4):
    """Equal up to float32 rounding of differently batched sums: relative to each map's largest value."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).reshape(len(b), -1).max(axis=1).reshape((-1,) + (1,) * (b.ndim - 1))
    return bool(np.all(np.abs(a - b) <= rtol * scale + 1e-12))


def _in_batches(explainer, x, batch, targets=None, **kw):
    """``explainer`` on the dataset's batches of ``x``, joined: (targets, relevance, logits). oneDNN rounds
    differently at other batch sizes, and a max pooling window whose values tie within that rounding routes
    relevance to another pixel (seen on one CPU: 8 windows of pool3 for one image, 26 of 81920 pixels moved by
    up to 1 % of the map's scale), so a reference runs the batches the store was written from."""
    runs = [explainer(x[i:i + batch], None if targets is None else targets[i:i + batch], **kw)
            for i in range(0, len(x), batch)]
    return tuple(np.concatenate([getattr(r, key) for r in runs]) for key in ("targets", "relevance", "logits"))


def _same_store(a, b) -> None:
    for name in ROW_ARRAYS + ("done",):
        np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)


# ---- the store holds what Explainer gives ------------------------------------------------------------

def test_store_matches_explainer(model, scenes, tmp_path):
    images, labels = scenes
    store = explain_dataset(model, (images, labels), "sglrp", targets="label", out=tmp_path / "s.zarr",
                            batch_size=16, chunk_size=16, preprocess=demo.preprocess, progress=False)
    explainer = Explainer(model, "sglrp", preprocess=demo.preprocess)
    _, relevance, logits = _in_batches(explainer, demo.preprocess(images), 16, labels)
    assert store["relevance"].shape == (40, 64, 64, 3) and store["relevance"].dtype == np.float32
    assert store["relevance"].chunks[0] == 16
    assert _close(store["relevance"][...], relevance)
    np.testing.assert_allclose(store["logits"][...], logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(store["targets"][...], labels)
    np.testing.assert_array_equal(store["ids"][...], np.arange(40))
    np.testing.assert_array_equal(store["labels"][...], labels)
    assert store["done"][...].all() and store.attrs["sglrp_widgets"]["complete"]
    # the small int8 heatmaps and thumbnails a gallery reads
    heat = store["heatmaps"][...].astype(np.float32) * store["heatmap_scale"][...][:, None, None] / 127
    want = relevance.sum(-1)
    np.testing.assert_allclose(heat, want, atol=float(np.abs(want).max()) / 100)
    np.testing.assert_array_equal(store["thumbnails"][...], images)


def test_top1_without_preprocess_uses_the_whole_datasets_bounds(model, scenes, tmp_path):
    """Without preprocess, z_box bounds come from the whole dataset, as for one Explainer call on all of it:
    a map does not depend on which images share its batch."""
    x = demo.preprocess(scenes[0])
    store = explain_dataset(model, x, "sglrp", out=tmp_path / "s.zarr", batch_size=8, progress=False)
    low, high = float(x.min()), float(x.max())
    assert store.attrs["sglrp_widgets"]["bounds_values"] == [low, high]
    # the reference runs the store's batches with the whole dataset's range, which some batches lack
    assert any((x[i:i + 8].min(), x[i:i + 8].max()) != (low, high) for i in range(0, len(x), 8))
    targets, relevance, _ = _in_batches(Explainer(model, "sglrp", low=low, high=high), x, 8)
    assert _close(store["relevance"][...], relevance)
    np.testing.assert_array_equal(store["targets"][...], targets)


def test_topk_rows_and_channel_sum_in_float16(model, scenes, tmp_path):
    images, batch = scenes[0][:10], 4
    store = explain_dataset(model, images, "lrp.epsilon", targets="top2", out=tmp_path / "s.zarr", batch_size=batch,
                            preprocess=demo.preprocess, channels="sum", dtype="float16", epsilon=0.5,
                            progress=False)
    explainer = Explainer(model, "lrp.epsilon", epsilon=0.5)
    targets, relevance, _ = _in_batches(explainer, demo.preprocess(images), batch, top_k=2)
    assert store["relevance"].shape == (20, 64, 64) and store["relevance"].dtype == np.float16
    np.testing.assert_array_equal(store["ids"][...], np.repeat(np.arange(10), 2))
    np.testing.assert_array_equal(store["targets"][...], targets.reshape(-1))
    want = relevance.sum(-1).reshape(20, 64, 64)
    got = store["relevance"][...].astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=float(np.abs(want).max()) * 1e-3)
    assert store.attrs["sglrp_widgets"]["params"]["epsilon"] == 0.5


def test_fixed_classes_and_gradient_method(model, scenes, tmp_path):
    images = scenes[0][:6]
    store = explain_dataset(model, images, "gradient", targets=[2, 5], out=tmp_path / "s.zarr", batch_size=4,
                            preprocess=demo.preprocess, progress=False)
    np.testing.assert_array_equal(store["targets"][...], [2, 5] * 6)
    _, relevance, _ = _in_batches(Explainer(model, "gradient"), demo.preprocess(images), 4, [[2, 5]] * 6)
    assert _close(store["relevance"][...], relevance.reshape((12,) + images.shape[1:]))


def test_tf_data_gives_the_same_store_as_arrays(model, scenes, tmp_path):
    import tensorflow as tf

    images, labels = scenes
    a = explain_dataset(model, (images, labels), "sglrp", targets="label", out=tmp_path / "a.zarr", batch_size=8,
                        chunk_size=16, preprocess=demo.preprocess, progress=False)
    batched = tf.data.Dataset.from_tensor_slices((images, labels)).batch(7)      # batches across chunk borders
    b = explain_dataset(model, batched, "sglrp", targets="label", out=tmp_path / "b.zarr", batch_size=8,
                        chunk_size=16, preprocess=demo.preprocess, progress=False)
    _same_store(a, b)
    # dict elements and an unknown size (filter) work too
    dicts = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).filter(lambda d: True)
    c = explain_dataset(model, dicts, "sglrp", targets="label", out=tmp_path / "c.zarr", batch_size=8,
                        chunk_size=16, preprocess=demo.preprocess, progress=False)
    _same_store(a, c)


def test_image_folder_with_class_subfolders(model, tmp_path):
    images, labels = scene_folder(tmp_path / "data", 6, seed=4)
    store = explain_dataset(model, tmp_path / "data", "sglrp", targets="label", out=tmp_path / "s.zarr",
                            batch_size=4, preprocess=demo.preprocess, class_names=demo.class_names, progress=False)
    files = store["files"][...].tolist()
    assert files == sorted(files) and len(files) == 6
    order = [int(Path(f).stem[3:]) for f in files]
    np.testing.assert_array_equal(store["labels"][...], labels[order, 0])
    np.testing.assert_array_equal(store["targets"][...], labels[order, 0])
    ref = Explainer(model, "sglrp", preprocess=demo.preprocess)(demo.preprocess(images[order]), labels[order, 0])
    assert _close(store["relevance"][...], ref.relevance)
    assert store.attrs["sglrp_widgets"]["class_names"] == demo.class_names


# ---- resuming --------------------------------------------------------------------------------------

def test_rerun_resumes_and_skips_finished_chunks(model, scenes, tmp_path, monkeypatch):
    images, labels = scenes
    out = tmp_path / "s.zarr"
    explain_dataset(model, images, "sglrp", out=out, batch_size=8, chunk_size=8, preprocess=demo.preprocess,
                    progress=False)
    group = zarr.open_group(str(out), mode="r+")
    group["done"][2] = False                    # as if chunk 2 had not been finished
    group["relevance"][16:24] = 0
    calls = []
    real = Explainer.__call__
    monkeypatch.setattr(Explainer, "__call__", lambda self, x, **kw: calls.append(len(x)) or real(self, x, **kw))
    store = explain_dataset(model, images, "sglrp", out=out, batch_size=8, preprocess=demo.preprocess,
                            progress=False)
    assert calls == [1, 8]                      # the probe image, then chunk 2 only
    ref = Explainer(model, "sglrp", preprocess=demo.preprocess)(demo.preprocess(images[16:24]))
    assert _close(store["relevance"][16:24], ref.relevance)


_RUN = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    from sglrp_widgets import demo
    from sglrp_widgets.dataset import explain_dataset
    out, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    pause_after = int(os.environ.get("PAUSE_AFTER_CHUNKS", "0"))
    if pause_after:                     # hang before chunk pause_after + 1, to be killed there
        import time
        from sglrp_widgets.engine import Explainer
        real, chunks = Explainer.__call__, []
        def paused(self, x, **kw):
            if len(x) > 1:              # not the one-image probe
                chunks.append(len(x))
            if len(chunks) > pause_after:
                time.sleep(3600)
            return real(self, x, **kw)
        Explainer.__call__ = paused
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif mode == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = None
    images, labels, _ = demo.make_scenes(n, seed=3)
    store = explain_dataset(demo.load_model(), (images, labels[:, 0]), "sglrp", targets="label", out=out,
                            batch_size=8, chunk_size=8, preprocess=demo.preprocess, strategy=strategy,
                            progress=False)
    print("finished", store.attrs["sglrp_widgets"]["complete"], flush=True)
""")


def _reference(out, n: int):
    """The store of one uninterrupted in-process run, with the settings of the script above."""
    images, labels, _ = demo.make_scenes(n, seed=3)
    return explain_dataset(demo.load_model(), (images, labels[:, 0]), "sglrp", targets="label", out=out,
                           batch_size=8, chunk_size=8, preprocess=demo.preprocess, progress=False)


def _script(tmp_path) -> str:
    path = tmp_path / "run_dataset.py"
    path.write_text(_RUN)
    return str(path)


def _env(**extra) -> dict:
    path = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path)
    env.update(extra)
    return env


def test_killed_run_resumes_to_the_same_store(tmp_path):
    """SIGKILL a run after a few chunks, start it again: the store equals an uninterrupted run's."""
    script, n = _script(tmp_path), 96                  # 12 chunks of 8
    out = tmp_path / "cut.zarr"
    # The run hangs before its fourth chunk, so that a fast machine cannot finish it between two looks.
    proc = subprocess.Popen([sys.executable, script, str(out), str(n), "default"], env=_env(PAUSE_AFTER_CHUNKS="3"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    done = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                done = int(zarr.open_group(str(out), mode="r")["done"][...].sum())
            except Exception:  # noqa: BLE001 - the store does not exist yet
                continue
            if done >= 3:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert 3 <= done < 12, f"the run was not cut halfway: {done} of 12 chunks done"
    cut = zarr.open_group(str(out), mode="r")
    assert not cut.attrs["sglrp_widgets"]["complete"] and not cut["done"][...].all()
    again = subprocess.run([sys.executable, script, str(out), str(n), "default"], env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    _same_store(open_store(out), _reference(tmp_path / "full.zarr", n))
    assert open_store(out).attrs["sglrp_widgets"]["complete"]
    assert not list(Path(out).rglob("*.partial"))


# ---- several devices and workers -------------------------------------------------------------------

def test_two_workers_write_the_same_store_as_one_process(tmp_path):
    script, n = _script(tmp_path), 40
    configs = local_worker_configs(2)
    procs = [subprocess.Popen([sys.executable, script, str(tmp_path / "two.zarr"), str(n), "multiworker"],
                              env=_env(TF_CONFIG=c), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in configs]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert "finished True" in outs[0][0]               # the chief returns once every chunk is written
    _same_store(open_store(tmp_path / "two.zarr"), _reference(tmp_path / "one.zarr", n))


def test_mirrored_strategy_splits_batches_across_devices(tmp_path, model):
    script, n = _script(tmp_path), 24
    res = subprocess.run([sys.executable, script, str(tmp_path / "m.zarr"), str(n), "mirrored"], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    store = open_store(tmp_path / "m.zarr")
    images, labels, _ = demo.make_scenes(n, seed=3)
    ref = Explainer(model, "sglrp", preprocess=demo.preprocess)(demo.preprocess(images), labels[:, 0])
    assert _close(store["relevance"][...], ref.relevance)


def test_shards_are_contiguous_and_cover_every_chunk():
    from sglrp_widgets.dataset import _shard

    for chunks in (1, 2, 7, 12):
        for workers in (1, 2, 3):
            got = [list(_shard(chunks, i, workers)) for i in range(workers)]
            assert sum(got, []) == list(range(chunks))


# ---- mistakes ----------------------------------------------------------------------------------------

def test_clear_errors(model, scenes, tmp_path):
    images, labels = scenes
    x = images[:4]
    with pytest.raises(ExplainError, match="needs labels"):
        explain_dataset(model, x, "sglrp", targets="label", out=tmp_path / "a.zarr", preprocess=demo.preprocess)
    with pytest.raises(ExplainError, match="top3"):
        explain_dataset(model, x, "sglrp", targets="best", out=tmp_path / "a.zarr", preprocess=demo.preprocess)
    with pytest.raises(ExplainError, match="out of range"):
        explain_dataset(model, x, "sglrp", targets=[9], out=tmp_path / "a.zarr", preprocess=demo.preprocess)
    with pytest.raises(ExplainError, match="distinct"):
        explain_dataset(model, x, "sglrp", targets=[1, 1], out=tmp_path / "a.zarr", preprocess=demo.preprocess)
    with pytest.raises(ExplainError, match="floating point"):
        explain_dataset(model, x, "sglrp", out=tmp_path / "a.zarr")          # raw uint8 without preprocess
    with pytest.raises(ExplainError, match=r"\(N, H, W, C\)"):
        explain_dataset(model, x[..., 0], "sglrp", out=tmp_path / "a.zarr", preprocess=demo.preprocess)
    with pytest.raises(ExplainError, match="batch_size"):
        explain_dataset(model, x, "sglrp", out=tmp_path / "a.zarr", batch_size=0)
    with pytest.raises(ExplainError, match="Unknown parameter"):
        explain_dataset(model, x, "sglrp", out=tmp_path / "a.zarr", preprocess=demo.preprocess, epsilon=1)
    assert not (tmp_path / "a.zarr").exists()          # nothing written by a refused call

    other = tmp_path / "not_a_store"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ExplainError, match="not a dataset store"):
            explain_dataset(model, x, "sglrp", out=other, preprocess=demo.preprocess, overwrite=overwrite,
                            progress=False)
    assert (other / "keep.txt").read_text() == "mine"


def test_empty_folder_and_a_creation_cut_short_are_written(model, scenes, tmp_path):
    x = scenes[0][:4]
    empty = tmp_path / "empty"
    empty.mkdir()
    store = explain_dataset(model, x, "gradient", targets="topk", top_k=2, out=empty, preprocess=demo.preprocess,
                            progress=False)
    assert store["relevance"].shape[0] == 8
    cut = zarr.open_group(str(tmp_path / "cut.zarr"), mode="w")     # arrays made, no run description yet
    cut.create_array("relevance", shape=(4,), dtype="float32")
    store = explain_dataset(model, x, "gradient", targets=None, out=tmp_path / "cut.zarr",
                            preprocess=demo.preprocess, progress=False)
    assert store.attrs["sglrp_widgets"]["complete"] and store["relevance"].shape == (4, 64, 64, 3)


def test_a_store_with_other_settings_is_kept_unless_overwrite(model, scenes, tmp_path):
    x = scenes[0][:8]
    out = tmp_path / "s.zarr"
    explain_dataset(model, x, "sglrp", out=out, preprocess=demo.preprocess, batch_size=4, progress=False)
    with pytest.raises(ExplainError, match="other settings.*method"):
        explain_dataset(model, x, "lrp", out=out, preprocess=demo.preprocess, progress=False)
    with pytest.raises(ExplainError, match="chunk_size"):
        explain_dataset(model, x, "sglrp", out=out, preprocess=demo.preprocess, chunk_size=3, progress=False)
    with pytest.raises(ExplainError, match="other settings.*source"):
        explain_dataset(model, x[::-1].copy(), "sglrp", out=out, preprocess=demo.preprocess, progress=False)
    store = explain_dataset(model, x, "lrp", out=out, preprocess=demo.preprocess, overwrite=True, progress=False)
    assert store.attrs["sglrp_widgets"]["method"] == "lrp"


def test_dataset_that_is_infinite_or_shrinks(model, scenes, tmp_path):
    import tensorflow as tf

    x = scenes[0][:8]
    with pytest.raises(ExplainError, match="infinite"):
        explain_dataset(model, tf.data.Dataset.from_tensor_slices(x).repeat(), "sglrp", out=tmp_path / "a.zarr",
                        preprocess=demo.preprocess, progress=False)
    state = {"n": 8}
    ds = tf.data.Dataset.from_generator(lambda: iter(x[:state["n"]]),
                                        output_signature=tf.TensorSpec((64, 64, 3), tf.uint8))
    explain_dataset(model, ds, "gradient", out=tmp_path / "b.zarr", chunk_size=4, preprocess=demo.preprocess,
                    progress=False)
    g = zarr.open_group(str(tmp_path / "b.zarr"), mode="r+")
    g["done"][1] = False
    state["n"] = 6                                  # the data changed under the store
    with pytest.raises(ExplainError, match="same images in the same order"):
        explain_dataset(model, ds, "gradient", out=tmp_path / "b.zarr", preprocess=demo.preprocess, progress=False)


# ---- command line ------------------------------------------------------------------------------------

def test_cli_dataset_command(tmp_path, capsys):
    images, labels, _ = demo.make_scenes(12, seed=2)
    np.savez(tmp_path / "data.npz", x=images, y=labels[:, 0])
    out = tmp_path / "s.zarr"
    argv = ["dataset", "--model", "cnn", "--data", str(tmp_path / "data.npz"), "--targets", "label",
            "--method", "lrp.epsilon", "--param", "epsilon=0.2", "--batch-size", "4", "-q", "-o", str(out)]
    assert cli.main(argv) == 0
    assert "12 maps of 12 images" in capsys.readouterr().out
    store = open_store(out)
    np.testing.assert_array_equal(store["targets"][...], labels[:, 0])
    assert store.attrs["sglrp_widgets"]["params"]["epsilon"] == 0.2
    assert store.attrs["sglrp_widgets"]["class_names"] == demo.class_names
    assert cli.main(argv + ["--spray"]) == 0        # a finished store: nothing to explain; SpRAy runs
    assert "spray" in open_store(out)
    assert cli.main(["dataset", "--model", "cnn", "--data", str(tmp_path / "nope"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sglrp-widgets: error: data not found")
    assert cli.main(["dataset", "--model", "cnn", "--data", str(tmp_path / "data.npz"), "--targets", "9",
                     "-q", "-o", str(tmp_path / "t.zarr")]) == 2
    assert "out of range" in capsys.readouterr().err


def test_local_worker_configs_name_one_cluster_and_each_worker_once():
    import json
    configs = [json.loads(c) for c in local_worker_configs(3)]
    workers = configs[0]["cluster"]["worker"]
    assert len(set(workers)) == 3 and all(w.startswith("127.0.0.1:") for w in workers)
    assert all(c["cluster"] == {"worker": workers} for c in configs)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
