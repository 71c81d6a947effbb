"""Tests of the sglrp-widgets command line (in-process main() and one subprocess smoke test)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sglrp_widgets import cli, demo

pytest.importorskip("sglrp_widgets.engine")


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    images, labels, _ = demo.make_scenes(3, objects=1, seed=77)
    paths = []
    for i, im in enumerate(images):
        p = d / f"scene{i}.png"
        Image.fromarray(im).save(p)
        paths.append(p)
    return paths, labels[:, 0]


def _err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sglrp-widgets: error: ")
    return err[0]


def test_explain_writes_pngs_and_npy(tmp_path, scene_files, capsys):
    paths, labels = scene_files
    out = tmp_path / "out"
    rc = cli.main(
        ["explain", "--model", str(demo.MODEL_PATH), "--image", *map(str, paths), "--method", "lrp",
         "--preprocess", "scale01", "--npy", "-o", str(out)]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "wrote 3 heatmap(s)" in captured.out
    assert "3/3 images" in captured.err  # progress bar
    from sglrp_widgets.engine import explain

    model = demo.load_model()
    for p, lab in zip(paths, labels):
        # top-1 is the true class for these scenes; the file is named after it
        png = out / f"{p.stem}_lrp_{lab}.png"
        npy = out / f"{p.stem}_lrp_{lab}.npy"
        assert png.is_file() and npy.is_file()
        rel = np.load(npy)
        assert rel.shape == (64, 64, 3) and rel.dtype == np.float32
        x = demo.preprocess(np.asarray(Image.open(p)))[None]
        ref = np.asarray(explain(model, x, method="lrp", targets=[int(lab)], preprocess=demo.preprocess).relevance)[0]
        np.testing.assert_allclose(rel, ref, rtol=1e-4, atol=1e-6)
        # the PNG is the colour-coded channel sum
        from sglrp_widgets.viz import heatmap_rgba

        exp = np.rint(heatmap_rgba(ref.sum(-1))[..., :3] * 255).astype(np.uint8)
        got = np.asarray(Image.open(png))
        assert np.abs(got.astype(int) - exp.astype(int)).max() <= 1


def test_explain_target_and_top_k(tmp_path, scene_files, capsys):
    paths, _ = scene_files
    rc = cli.main(["explain", "--model", "demo", "--image", str(paths[0]), "--method", "sglrp",
                   "--target", "4", "-o", str(tmp_path / "a")])
    assert rc == 0
    assert sorted(f.name for f in (tmp_path / "a").iterdir()) == [f"{paths[0].stem}_sglrp_4.png"]
    rc = cli.main(["explain", "--model", "demo", "--image", str(paths[0]), "--method", "gradient",
                   "--top-k", "3", "-o", str(tmp_path / "b"), "-v"])
    assert rc == 0
    files = sorted(f.name for f in (tmp_path / "b").iterdir())
    assert len(files) == 3
    p = demo.load_model().predict(demo.preprocess(np.asarray(Image.open(paths[0])))[None], verbose=0)[0]
    top3 = np.argsort(-p)[:3]
    assert files == sorted(f"{paths[0].stem}_gradient_{t}.png" for t in top3)
    assert capsys.readouterr().out.count(" p=") == 3


def test_explain_resizes_and_reads_npy(tmp_path, capsys):
    img = np.zeros((100, 80, 3), np.uint8)
    img[20:60, 20:60] = [255, 0, 0]
    Image.fromarray(img).save(tmp_path / "big.png")
    np.save(tmp_path / "raw.npy", demo.make_scenes(1, seed=3)[0][0].astype(np.float32))
    rc = cli.main(["explain", "--model", "demo", "--image", str(tmp_path / "big.png"), str(tmp_path / "raw.npy"),
                   "--method", "grad_cam", "--target", "0", "--scale", "2", "-o", str(tmp_path / "o")])
    assert rc == 0
    assert np.asarray(Image.open(tmp_path / "o" / "big_grad_cam_0.png")).shape == (128, 128, 3)
    assert (tmp_path / "o" / "raw_grad_cam_0.png").is_file()


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--model", "demo", "--image", "nope.png"], "image file not found: 'nope.png'"),
        (["--model", "missing.keras", "--image", "IMG"], "model file not found: 'missing.keras'"),
        (["--model", "demo", "--image", "IMG", "--method", "bogus"], "unknown method 'bogus'"),
        (["--model", "demo", "--image", "IMG", "--target", "6"], "--target 6 is out of range: the model has 6 classes"),
        (["--model", "demo", "--image", "IMG", "--target", "-1"], "--target -1 is out of range"),
        (["--model", "demo", "--image", "IMG", "--top-k", "7"], "--top-k 7 exceeds the model's 6 classes"),
        (["--model", "demo", "--image", "IMG", "--top-k", "0"], "--top-k must be >= 1, got 0"),
        (["--model", "demo", "--image", "IMG", "--param", "oops"], "--param must look like NAME=VALUE, got 'oops'"),
        (["--model", "demo", "--image", "IMG", "--cmap", "nocmap"], "unknown colormap 'nocmap'"),
        (["--model", "demo", "--image", "IMG", "--scale", "0"], "--scale must be >= 1, got 0"),
        (["--model", "demo", "--image", "IMG", "--method", "lrp.epsilon", "--param", "epsilon=-1"], "epsilon"),
        (["--model", "demo", "--image", "IMG", "--method", "lrp", "--param", "bogus=1"], "bogus"),
    ],
)
def test_explain_user_errors(tmp_path, scene_files, capsys, argv, msg):
    img = str(scene_files[0][0])
    argv = [img if a == "IMG" else a for a in argv]
    rc = cli.main(["explain", *argv, "-o", str(tmp_path / "o")])
    assert rc == 2
    assert msg in _err_line(capsys)
    assert not (tmp_path / "o").exists()


def test_unloadable_and_unreadable_files(tmp_path, scene_files, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip file")
    rc = cli.main(["explain", "--model", str(bad), "--image", str(scene_files[0][0]), "-o", str(tmp_path / "o")])
    assert rc == 2
    assert f"cannot load model {str(bad)!r}" in _err_line(capsys)
    txt = tmp_path / "notimage.png"
    txt.write_text("hello")
    rc = cli.main(["explain", "--model", "demo", "--image", str(txt), "-o", str(tmp_path / "o")])
    assert rc == 2
    assert "cannot read image" in _err_line(capsys)


def test_unsafe_load_needed_for_lambda(tmp_path, scene_files, capsys):
    import keras

    inp = keras.Input((64, 64, 3))
    x = keras.layers.Lambda(lambda t: t * 1.0)(inp)
    x = keras.layers.Conv2D(2, 3)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    path = tmp_path / "lam.keras"
    keras.Model(inp, out).save(path)
    rc = cli.main(["explain", "--model", str(path), "--image", str(scene_files[0][0]), "--method", "gradient",
                   "-o", str(tmp_path / "o")])
    assert rc == 2
    line = _err_line(capsys)
    assert "cannot load model" in line and "--unsafe-load" in line


def test_bad_option_value_from_argparse(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["explain", "--model", "demo", "--image", "x.png", "--preprocess", "nope", "-o", "o"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["explain", "--model", "demo", "--image", "x.png", "--target", "1", "--top-k", "2", "-o", "o"])
    assert e.value.code == 2


def test_preprocessors_values():
    x = np.array([[[0.0, 127.5, 255.0]]], np.float32)
    np.testing.assert_allclose(cli.PREPROCESSORS["scale01"][0](x), [[[0, 0.5, 1]]])
    np.testing.assert_allclose(cli.PREPROCESSORS["tf"][0](x), [[[-1, 0, 1]]], atol=1e-6)
    # caffe/vgg16: RGB -> BGR and minus the ImageNet means (B 103.939, G 116.779, R 123.68)
    np.testing.assert_allclose(cli.PREPROCESSORS["vgg16"][0](x), [[[255 - 103.939, 127.5 - 116.779, -123.68]]], atol=1e-3)
    before = x.copy()
    cli.PREPROCESSORS["caffe"][0](x)
    np.testing.assert_array_equal(x, before)  # input not modified in place


def test_progress_bar():
    s = io.StringIO()
    p = cli.Progress(10, stream=s, width=10)
    p.update(5)
    assert s.getvalue() == ""  # not a terminal: only the final line
    p.close()
    assert s.getvalue().startswith("[##########] 10/10 images")


def test_demo_command(tmp_path, capsys):
    out = tmp_path / "fig.png"
    rc = cli.main(["demo", "-o", str(out), "--methods", "lrp", "sglrp", "grad_cam"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out)
    im = np.asarray(Image.open(out))
    assert im.shape[0] > 300 and im.shape[1] > 300
    # several scenes -> numbered files
    rc = cli.main(["demo", "-o", str(tmp_path / "f.png"), "--methods", "sglrp", "--scenes", "2", "--alpha", "0.6"])
    assert rc == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "f_0.png"), str(tmp_path / "f_1.png")]


def test_demo_command_errors(tmp_path, capsys):
    assert cli.main(["demo", "-o", str(tmp_path / "f.png"), "--methods", "lrp", "nope"]) == 2
    assert "unknown method 'nope'" in _err_line(capsys)
    assert cli.main(["demo", "-o", str(tmp_path / "no" / "f.png")]) == 2
    assert "output folder does not exist" in _err_line(capsys)


@pytest.mark.slow
def test_subprocess_smoke(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = tmp_path / "d.png"
    r = subprocess.run(
        [sys.executable, "-m", "sglrp_widgets.cli", "demo", "-o", str(out), "--methods", "lrp", "sglrp"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(out)
    assert out.stat().st_size > 5000
    r = subprocess.run(
        [sys.executable, "-m", "sglrp_widgets.cli", "explain", "--model", "nope.keras", "--image", str(out),
         "-o", str(tmp_path / "x")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == "sglrp-widgets: error: model file not found: 'nope.keras'"


def test_dotted_method_and_file_names(tmp_path, scene_files, capsys):
    src = scene_files[0][0]
    dotted = tmp_path / "my.scene.v2.png"
    dotted.write_bytes(src.read_bytes())
    rc = cli.main(["explain", "--model", "demo", "--image", str(dotted), "--method", "lrp.epsilon",
                   "--param", "epsilon=0.01", "--target", "2", "--npy", "-o", str(tmp_path / "o")])
    assert rc == 0
    assert sorted(f.name for f in (tmp_path / "o").iterdir()) == [
        "my.scene.v2_lrp.epsilon_2.npy", "my.scene.v2_lrp.epsilon_2.png"]


def test_duplicate_stems_get_unique_names(tmp_path, scene_files):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir(), b.mkdir()
    for d in (a, b):
        (d / "img.png").write_bytes(scene_files[0][0].read_bytes())
    rc = cli.main(["explain", "--model", "demo", "--image", str(a / "img.png"), str(b / "img.png"),
                   "--method", "gradient", "--target", "1", "-o", str(tmp_path / "o")])
    assert rc == 0
    assert sorted(f.name for f in (tmp_path / "o").iterdir()) == ["img-1_gradient_1.png", "img_gradient_1.png"]


def test_relu_keeps_positive_part(tmp_path, scene_files):
    src = str(scene_files[0][0])
    for flag, sub in (([], "all"), (["--relu"], "pos")):
        assert cli.main(["explain", "--model", "demo", "--image", src, "--method", "sglrp", "--target", "0",
                         "--npy", *flag, "-o", str(tmp_path / sub)]) == 0
    stem = scene_files[0][0].stem
    full = np.load(tmp_path / "all" / f"{stem}_sglrp_0.npy")
    pos = np.load(tmp_path / "pos" / f"{stem}_sglrp_0.npy")
    assert full.min() < 0 and pos.min() >= 0
    np.testing.assert_allclose(pos, np.clip(full, 0, None), rtol=1e-5, atol=1e-7)


def test_own_model_with_vgg16_preprocessing(tmp_path, capsys):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    path = tmp_path / "tiny.keras"
    keras.Model(inp, out).save(path)
    img = (np.random.default_rng(0).uniform(0, 255, (32, 32, 3))).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    rc = cli.main(["explain", "--model", str(path), "--image", str(tmp_path / "x.png"), "--method", "lrp",
                   "--preprocess", "vgg16", "--target", "7", "--npy", "-v", "-o", str(tmp_path / "o")])
    assert rc == 0
    assert "class 7 (class 7)" in capsys.readouterr().out
    from sglrp_widgets.engine import explain

    prep = cli.PREPROCESSORS["vgg16"][0]
    model = keras.saving.load_model(path)
    ref = explain(model, prep(img[None].astype(np.float32)), method="lrp", targets=[7], preprocess=prep)
    got = np.load(tmp_path / "o" / "x_lrp_7.npy")
    np.testing.assert_allclose(got, np.asarray(ref.relevance)[0], rtol=1e-4, atol=1e-6)
    # LRP (bounded Deep Taylor) conserves the target logit
    assert got.sum() == pytest.approx(float(np.asarray(ref.logits)[0, 7]), rel=1e-3, abs=1e-4)
