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

NAMES = demo.class_names  # the bundled model's classes: file names carry them


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
        png = out / f"{p.stem}_lrp_{NAMES[lab]}.png"
        npy = out / f"{p.stem}_lrp_{NAMES[lab]}.npy"
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
    assert sorted(f.name for f in (tmp_path / "a").iterdir()) == [f"{paths[0].stem}_sglrp_{NAMES[4]}.png"]
    rc = cli.main(["explain", "--model", "demo", "--image", str(paths[0]), "--method", "gradient",
                   "--top-k", "3", "-o", str(tmp_path / "b"), "-v"])
    assert rc == 0
    files = sorted(f.name for f in (tmp_path / "b").iterdir())
    assert len(files) == 3
    p = demo.load_model().predict(demo.preprocess(np.asarray(Image.open(paths[0])))[None], verbose=0)[0]
    top3 = np.argsort(-p)[:3]
    assert files == sorted(f"{paths[0].stem}_gradient_{NAMES[t]}.png" for t in top3)
    assert capsys.readouterr().out.count(" p=") == 3


def test_explain_resizes_and_reads_npy(tmp_path, capsys):
    img = np.zeros((100, 80, 3), np.uint8)
    img[20:60, 20:60] = [255, 0, 0]
    Image.fromarray(img).save(tmp_path / "big.png")
    np.save(tmp_path / "raw.npy", demo.make_scenes(1, seed=3)[0][0].astype(np.float32))
    rc = cli.main(["explain", "--model", "demo", "--image", str(tmp_path / "big.png"), str(tmp_path / "raw.npy"),
                   "--method", "grad_cam", "--target", "0", "--scale", "2", "-o", str(tmp_path / "o")])
    assert rc == 0
    assert np.asarray(Image.open(tmp_path / "o" / "big_grad_cam_circle.png")).shape == (128, 128, 3)
    assert (tmp_path / "o" / "raw_grad_cam_circle.png").is_file()


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--model", "demo", "--image", "nope.png"], "image file not found: 'nope.png'"),
        (["--model", "missing.keras", "--image", "IMG"], "model file not found: 'missing.keras'"),
        (["--model", "cnnn", "--image", "IMG"], "Did you mean 'cnn'?"),
        (["--model", "demo", "--image", "IMG", "--method", "bogus"], "unknown method 'bogus'"),
        (["--model", "demo", "--image", "IMG", "--method", "sglpr"], "unknown method 'sglpr'. Did you mean 'sglrp'?"),
        (["--model", "demo", "--image", "IMG", "--target", "hexagon"], "--target 'hexagon' is not a class"),
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
    assert f"{str(bad)!r} is not a Keras model file" in _err_line(capsys)
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


def test_a_mixed_precision_model_file_is_explained_as_a_float32_copy_with_a_note(tmp_path, scene_files, capsys):
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inp = keras.Input((64, 64, 3))
        x = keras.layers.Conv2D(2, 3, activation="relu")(keras.layers.Rescaling(1 / 255.0)(inp))
        x = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
        model = keras.Model(inp, keras.layers.Activation("softmax", dtype="float32")(x))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    path = tmp_path / "mixed.keras"
    model.save(path)
    rc = cli.main(["explain", "--model", str(path), "--image", str(scene_files[0][0]), "--method", "sglrp",
                   "--target", "1", "--preprocess", "none", "-o", str(tmp_path / "o")])
    assert rc == 0
    err = capsys.readouterr().err
    assert "half precision" in err and "float32 copy" in err
    assert len(list((tmp_path / "o").glob("*.png"))) == 1
    assert cli.main(["explain", "--model", str(path), "--image", str(scene_files[0][0]), "--method", "sglrp",
                     "--target", "1", "--preprocess", "none", "-q", "-o", str(tmp_path / "q")]) == 0
    assert "half precision" not in capsys.readouterr().err                   # --quiet: no notes


def test_bad_option_value_from_argparse(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["explain", "--model", "demo", "--image", "x.png", "--preprocess", "nope", "-o", "o"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["explain", "--model", "demo", "--image", "x.png", "--target", "1", "--top-k", "2", "-o", "o"])
    assert e.value.code == 2


def test_every_option_of_every_command_says_what_it_does():
    import argparse

    commands = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) >= {"demo", "explain", "methods", "dataset"}
    silent = [f"{name} {a.option_strings[-1]}" for name, sub in commands.items() for a in sub._actions
              if a.option_strings and not a.help]
    assert not silent, f"options without help text: {silent}"


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
    # no TF_CPP_MIN_LOG_LEVEL: `import sglrp_widgets` keeps TensorFlow's start-up lines off stderr itself
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "SGLRP_WIDGETS_TF_LOGS")}
    out = tmp_path / "d.png"
    r = subprocess.run(
        [sys.executable, "-m", "sglrp_widgets.cli", "demo", "-o", str(out), "--methods", "lrp", "sglrp"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.strip().splitlines() == [str(out)]
    assert out.stat().st_size > 5000
    r = subprocess.run(
        [sys.executable, "-m", "sglrp_widgets.cli", "explain", "--model", "nope.keras", "--image", str(out),
         "-o", str(tmp_path / "x")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "sglrp-widgets: error: model file not found: 'nope.keras' (bundled models: "
        f"{', '.join(demo.MODELS)}; or give the path of a .keras file)"]


def test_dotted_method_and_file_names(tmp_path, scene_files, capsys):
    src = scene_files[0][0]
    dotted = tmp_path / "my.scene.v2.png"
    dotted.write_bytes(src.read_bytes())
    rc = cli.main(["explain", "--model", "demo", "--image", str(dotted), "--method", "lrp.epsilon",
                   "--param", "epsilon=0.01", "--target", "2", "--npy", "-o", str(tmp_path / "o")])
    assert rc == 0
    assert sorted(f.name for f in (tmp_path / "o").iterdir()) == [
        "my.scene.v2_lrp.epsilon_triangle.npy", "my.scene.v2_lrp.epsilon_triangle.png"]


def test_duplicate_stems_get_unique_names(tmp_path, scene_files):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir(), b.mkdir()
    for d in (a, b):
        (d / "img.png").write_bytes(scene_files[0][0].read_bytes())
    rc = cli.main(["explain", "--model", "demo", "--image", str(a / "img.png"), str(b / "img.png"),
                   "--method", "gradient", "--target", "1", "-o", str(tmp_path / "o")])
    assert rc == 0
    assert sorted(f.name for f in (tmp_path / "o").iterdir()) == ["img-1_gradient_square.png", "img_gradient_square.png"]


def test_figure_labels_the_map_and_bare_maps_get_a_legend_note(tmp_path, scene_files, capsys, monkeypatch):
    from sglrp_widgets import viz

    src, drawn = scene_files[0][0], []
    real = viz.explanation_figure

    def spy(image, heatmap, **kw):
        drawn.append((np.asarray(image), np.asarray(heatmap), kw))
        return real(image, heatmap, **kw)

    monkeypatch.setattr(cli, "explanation_figure", spy)
    assert cli.main(["explain", "--model", "demo", "--image", str(src), "--method", "sglrp", "--target", "0",
                     "--figure", "--npy", "-o", str(tmp_path / "fig")]) == 0
    assert "colours" not in capsys.readouterr().out
    image, heat, kw = drawn[0]
    x = demo.preprocess(np.asarray(Image.open(src)))[None]
    from sglrp_widgets.engine import explain

    p = float(explain(demo.load_model(), x, "gradient", targets=[0]).probabilities[0, 0])
    assert kw["title"] == f"{NAMES[0]} · {viz.format_probability(p)}"
    assert kw["subtitle"] == f"SGLRP · {src.name}"
    assert kw["legend"] == viz.legend_words("sglrp", "Contrastive LRP", NAMES[0])
    np.testing.assert_array_equal(image, np.asarray(Image.open(src)))
    np.testing.assert_allclose(heat, np.load(tmp_path / "fig" / f"{src.stem}_sglrp_{NAMES[0]}.npy").sum(-1), rtol=1e-6)
    png = Image.open(tmp_path / "fig" / f"{src.stem}_sglrp_{NAMES[0]}.png")
    assert png.size[0] == 400 and png.size[1] > 400          # 4 inches at 100 dpi, the title and bar below
    assert not kw["positive_only"]
    # Grad-CAM's maps are never negative: the bar starts at 0; Guided Grad-CAM's can be, and keep both ends
    for method, positive_only in (("grad_cam", True), ("guided_grad_cam", False)):
        assert cli.main(["explain", "--model", "demo", "--image", str(src), "--method", method, "--target", "0",
                         "--figure", "-o", str(tmp_path / method)]) == 0
        assert drawn[-1][2]["positive_only"] is positive_only
    # bare maps: the summary says what their colours mean
    for method, meaning in (("lrp", "red = speaks for its class, blue = speaks against its class"),
                            ("gradient", "red = brighter pixel raises its class, blue = brighter pixel lowers its class"),
                            ("grad_cam", "red = evidence for its class"),
                            ("guided_grad_cam", "red = evidence for its class, blue = no evidence")):
        assert cli.main(["explain", "--model", "demo", "--image", str(src), "--method", method, "--target", "0",
                         "-o", str(tmp_path / "bare")]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == (
            f"colours: {meaning} (the class is in each file's name); each map is scaled to its own 99.5th "
            "percentile of |relevance|; --figure writes labelled figures")


def test_relu_keeps_positive_part(tmp_path, scene_files):
    src = str(scene_files[0][0])
    for flag, sub in (([], "all"), (["--relu"], "pos")):
        assert cli.main(["explain", "--model", "demo", "--image", src, "--method", "sglrp", "--target", "0",
                         "--npy", *flag, "-o", str(tmp_path / sub)]) == 0
    stem = scene_files[0][0].stem
    full = np.load(tmp_path / "all" / f"{stem}_sglrp_circle.npy")
    pos = np.load(tmp_path / "pos" / f"{stem}_sglrp_circle.npy")
    assert full.min() < 0 and pos.min() >= 0
    np.testing.assert_allclose(pos, np.clip(full, 0, None), rtol=1e-5, atol=1e-7)


def test_bare_maps_with_no_negative_part_start_at_a_sequential_colormaps_low_end(tmp_path, scene_files):
    import matplotlib

    src, stem = str(scene_files[0][0]), scene_files[0][0].stem
    low_end = np.rint(np.asarray(matplotlib.colormaps["viridis"](0.0)[:3]) * 255)
    middle = np.rint(np.asarray(matplotlib.colormaps["viridis"](0.5)[:3]) * 255)
    for flag, sub, zero_colour in (([], "signed", middle), (["--relu"], "pos", low_end)):
        assert cli.main(["explain", "--model", "demo", "--image", src, "--method", "sglrp", "--target", "0",
                         "--cmap", "viridis", "--npy", *flag, "-o", str(tmp_path / sub)]) == 0
        png = np.asarray(Image.open(tmp_path / sub / f"{stem}_sglrp_circle.png"), float)
        heat = np.load(tmp_path / sub / f"{stem}_sglrp_circle.npy").sum(-1)
        zero = heat == 0
        if not zero.any():       # the signed map: its 0 lies between its pixels
            zero = np.abs(heat) == np.abs(heat).min()
            assert np.abs(heat).min() < 1e-3 * np.abs(heat).max()
        np.testing.assert_allclose(png[zero][:, :3], np.broadcast_to(zero_colour, (int(zero.sum()), 3)), atol=2)


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
    out = capsys.readouterr().out
    assert ": class 7 p=" in out  # a 10-class model of yours: no names are made up
    from sglrp_widgets.engine import explain

    prep = cli.PREPROCESSORS["vgg16"][0]
    model = keras.saving.load_model(path)
    ref = explain(model, prep(img[None].astype(np.float32)), method="lrp", targets=[7], preprocess=prep)
    got = np.load(tmp_path / "o" / "x_lrp_7.npy")
    np.testing.assert_allclose(got, np.asarray(ref.relevance)[0], rtol=1e-4, atol=1e-6)
    # LRP (bounded Deep Taylor) conserves the target logit
    assert got.sum() == pytest.approx(float(np.asarray(ref.logits)[0, 7]), rel=1e-3, abs=1e-4)


# ------------------------------------------------------------------ one test per surprise of issue 10
def _save_model(path, n_classes=6, name="tiny", size=32, zero=False):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(n_classes, activation="softmax")(x)
    model = keras.Model(inp, out, name=name)
    if zero:  # constant logits: every gradient is exactly zero
        model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    model.save(path)
    return path


def _png(path, w, h, seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)
    return img


def test_resize_is_said_and_chosen(tmp_path, capsys):
    """An image of another size is never resized silently; --resize picks how (or refuses)."""
    src = _png(tmp_path / "wide.png", 451, 300)
    base = ["explain", "--model", "cnn", "--image", str(tmp_path / "wide.png"), "--method", "gradient",
            "--target", "0", "--npy"]
    assert cli.main([*base, "-o", str(tmp_path / "crop")]) == 0
    err = capsys.readouterr().err
    assert "wide.png is 451x300, the model takes 64x64: scaled to 96x64 and centre-cropped to 64x64" in err
    # the default keeps the aspect ratio: the map is the one of the centre crop
    crop = np.asarray(Image.fromarray(src).resize((96, 64), Image.BILINEAR), np.float32)[:, 16:80]
    from sglrp_widgets.engine import explain

    ref = explain(demo.load_model(), demo.preprocess(crop[None]), "gradient", targets=[0]).relevance[0]
    np.testing.assert_allclose(np.load(tmp_path / "crop" / "wide_gradient_circle.npy"), ref, rtol=1e-4, atol=1e-7)

    assert cli.main([*base, "--resize", "stretch", "-o", str(tmp_path / "s")]) == 0
    assert "stretched to 64x64 (aspect ratio not kept) (--resize stretch)" in capsys.readouterr().err
    assert cli.main([*base, "--resize", "pad", "-o", str(tmp_path / "p")]) == 0
    assert "scaled to 64x43 and padded with black to 64x64" in capsys.readouterr().err
    assert cli.main([*base, "--resize", "none", "-o", str(tmp_path / "n")]) == 2
    assert "is 451x300 (W x H) and the model takes 64x64; resize it, or pass --resize" in _err_line(capsys)
    # an image of the right size gets no note; -q silences notes
    assert cli.main([*base, "--resize", "stretch", "-q", "-o", str(tmp_path / "q")]) == 0
    assert capsys.readouterr().err == ""


def test_class_names_only_from_known_sources(tmp_path, capsys):
    """A 6-class model of yours is not labelled with the demo's shapes; names come from --class-names,
    the model's own metadata, ImageNet (1000 classes) or the bundled model itself."""
    _png(tmp_path / "x.png", 32, 32)
    six = _save_model(tmp_path / "six.keras", n_classes=6)
    base = ["explain", "--image", str(tmp_path / "x.png"), "--method", "gradient", "--target", "3", "-v",
            "--preprocess", "scale01"]
    assert cli.main([*base, "--model", str(six), "-o", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert ": class 3 p=" in out and "cross" not in out
    assert [f.name for f in (tmp_path / "a").iterdir()] == ["x_gradient_3.png"]

    names = tmp_path / "names.txt"
    names.write_text("\n".join(["ant", "bee", "cat", "sea lion", "dog", "eel"]))
    assert cli.main([*base, "--model", str(six), "--class-names", str(names), "-o", str(tmp_path / "b")]) == 0
    assert "class 3 (sea lion)" in capsys.readouterr().out
    assert [f.name for f in (tmp_path / "b").iterdir()] == ["x_gradient_sea_lion.png"]

    # the model's own names: a "class_names" list in the .keras archive's metadata.json
    import json
    import zipfile

    own = tmp_path / "own.keras"
    with zipfile.ZipFile(six) as zin, zipfile.ZipFile(own, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "metadata.json":
                data = json.dumps({**json.loads(data), "class_names": list("ABCDEF")}).encode()
            zout.writestr(item, data)
    assert cli.main([*base, "--model", str(own), "-o", str(tmp_path / "c")]) == 0
    assert "class 3 (D)" in capsys.readouterr().out
    # ... and --target takes a name too, in any case
    assert cli.main([*base[:-5], "--target", "d", "-v", "--preprocess", "scale01", "--model", str(own),
                     "-o", str(tmp_path / "c2")]) == 0
    assert [f.name for f in (tmp_path / "c2").iterdir()] == ["x_gradient_D.png"]

    thousand = _save_model(tmp_path / "big.keras", n_classes=1000)
    assert cli.main([*base[:-5], "--target", "0", "-v", "--preprocess", "scale01", "--model", str(thousand),
                     "-o", str(tmp_path / "d")]) == 0
    assert "class 0 (tench)" in capsys.readouterr().out
    assert [f.name for f in (tmp_path / "d").iterdir()] == ["x_gradient_tench.png"]


def test_file_labels_stay_unique():
    import json

    from sglrp_widgets.cli_inputs import class_labels_for_files

    names = json.loads((demo.MODEL_PATH.parents[1] / "data" / "imagenet_classes.json").read_text(encoding="utf-8"))
    labels = class_labels_for_files(names, len(names))
    assert len(set(labels)) == 1000
    assert labels[2] == "great_white_shark" and labels[134] == "crane-134" and labels[517] == "crane-517"
    assert all("/" not in s and " " not in s for s in labels)


@pytest.mark.parametrize("spelling", ["SGLRP", "Sglrp", "Grad-CAM", "LRP.Epsilon"])
def test_method_names_ignore_case(tmp_path, scene_files, spelling, capsys):
    rc = cli.main(["explain", "--model", "demo", "--image", str(scene_files[0][0]), "--method", spelling,
                   "--target", "1", "-o", str(tmp_path / "o")])
    assert rc == 0
    canonical = cli.resolve_method(spelling)
    assert [f.name for f in (tmp_path / "o").iterdir()] == [f"{scene_files[0][0].stem}_{canonical}_square.png"]


@pytest.mark.parametrize(
    "name, content, msg",
    [
        ("x.keras", b"just some text\n", "is not a Keras model file: a .keras file is a zip archive"),
        ("x.h5", b"just some text\n", "is not a Keras model file: an .h5 file is an HDF5 file"),
        ("x.zip", None, "Keras loads files ending in .keras (or legacy .h5) (it is a .keras archive: rename"),
        ("x.txt", b"hello", "Keras loads files ending in .keras (or legacy .h5)"),
        ("folder", "dir", "it is a folder"),
    ],
)
def test_not_a_model_file_is_said_at_once(tmp_path, scene_files, capsys, name, content, msg):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is None:
        path.write_bytes(demo.MODEL_PATH.read_bytes())  # a real .keras archive under another suffix
    else:
        path.write_bytes(content)
    rc = cli.main(["explain", "--model", str(path), "--image", str(scene_files[0][0]), "-o", str(tmp_path / "o")])
    assert rc == 2
    assert f"{str(path)!r} " in (line := _err_line(capsys)) and msg in line


def test_not_a_model_file_needs_no_tensorflow(tmp_path, scene_files):
    """The check reads the file's first bytes; TensorFlow is never imported (so it takes well under 11 s)."""
    bad = tmp_path / "x.keras"
    bad.write_text("not a model")
    code = ("import sys; from sglrp_widgets.cli import main; "
            f"rc = main(['explain', '--model', {str(bad)!r}, '--image', {str(scene_files[0][0])!r}, '-o', 'o']); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "is not a Keras model file" in r.stderr


def test_degenerate_maps_warn_and_strict_fails(tmp_path, capsys):
    _png(tmp_path / "x.png", 32, 32)
    zero = _save_model(tmp_path / "zero.keras", zero=True)
    argv = ["explain", "--model", str(zero), "--image", str(tmp_path / "x.png"), "--method", "gradient",
            "--target", "0", "--preprocess", "scale01", "-o", str(tmp_path / "o")]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "x_gradient_0.png: the gradient map of class 0 is all zero (the PNG is blank)" in err
    assert cli.main([*argv, "--strict"]) == 1
    err = capsys.readouterr().err
    assert "error: 1 of 1 map(s) are degenerate (--strict)" in err
    # a normal map gets no warning, and --strict passes
    _png(tmp_path / "y.png", 32, 32)
    ok = _save_model(tmp_path / "ok.keras")
    assert cli.main([*argv[:2], str(ok), *argv[3:], "--strict"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_preprocess_guessed_from_the_model_name_and_said(tmp_path, capsys):
    img = _png(tmp_path / "x.png", 32, 32)
    vgg = _save_model(tmp_path / "v.keras", n_classes=10, name="vgg16")
    base = ["explain", "--image", str(tmp_path / "x.png"), "--method", "gradient", "--target", "1", "--npy"]
    assert cli.main([*base, "--model", str(vgg), "-o", str(tmp_path / "g")]) == 0
    assert "the model is named 'vgg16', so using --preprocess vgg16" in capsys.readouterr().err
    assert cli.main([*base, "--model", str(vgg), "--preprocess", "vgg16", "-o", str(tmp_path / "e")]) == 0
    assert "note" not in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "g" / "x_gradient_1.npy"),
                                  np.load(tmp_path / "e" / "x_gradient_1.npy"))
    other = _save_model(tmp_path / "o.keras", n_classes=10, name="my_classifier")
    assert cli.main([*base, "--model", str(other), "-o", str(tmp_path / "n")]) == 0
    assert "model's name 'my_classifier' is not a keras.applications one: feeding raw 0..255 values" in \
        capsys.readouterr().err
    import keras

    from sglrp_widgets.engine import explain

    ref = explain(keras.saving.load_model(other), img[None].astype(np.float32), "gradient", targets=[1])
    np.testing.assert_allclose(np.load(tmp_path / "n" / "x_gradient_1.npy"), ref.relevance[0], rtol=1e-5)


def test_a_keras_hub_classifier_is_fed_through_its_own_image_converter_and_that_is_said(tmp_path, capsys):
    """A keras_hub classifier carries its preprocessing (scale and offset per channel) in its image converter: with
    no --preprocess the CLI uses it, says so, and the map is the one of the converted image."""
    keras_hub = pytest.importorskip("keras_hub")
    import keras

    from sglrp_widgets.engine import explain

    keras.utils.set_random_seed(1)
    backbone = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=1, num_heads=2,
                                            hidden_dim=8, mlp_dim=16)
    scale, offset = [1 / 58.4, 1 / 57.1, 1 / 57.4], [-2.1, -2.0, -1.8]
    converter = keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=scale, offset=offset)
    preprocessor = keras_hub.models.ViTImageClassifierPreprocessor(image_converter=converter)
    keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=4, preprocessor=preprocessor,
                                        activation=None).save(tmp_path / "vit.keras")
    img = _png(tmp_path / "x.png", 32, 32)
    assert cli.main(["explain", "--model", str(tmp_path / "vit.keras"), "--image", str(tmp_path / "x.png"),
                     "--method", "gradient", "--target", "1", "--npy", "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "using the model's own preprocessing (x * [0.01712, 0.01751, 0.01742] + [-2.1, -2, -1.8], from its image " in err
    converted = img[None].astype(np.float32) * np.float32(scale) + np.float32(offset)
    want = explain(keras.saving.load_model(tmp_path / "vit.keras"), converted, "gradient", targets=[1])
    np.testing.assert_allclose(np.load(tmp_path / "out" / "x_gradient_1.npy"), want.relevance[0], rtol=1e-4,
                               atol=1e-6 * np.abs(want.relevance).max())


@pytest.mark.parametrize(
    "model_name, expected",
    [("vgg16", "vgg16"), ("resnet50", "resnet50"), ("resnet50v2", "resnet_v2"), ("mobilenetv2_1.00_224", "mobilenet_v2"),
     ("mobilenet_1.00_224", "mobilenet"), ("MobileNetV3Small", "mobilenet_v3"), ("efficientnetb0", "efficientnet"),
     ("efficientnetv2-b0", "efficientnet_v2"), ("convnext_tiny", "convnext"), ("densenet121", "densenet"),
     ("inception_v3", "inception_v3"), ("inception_resnet_v2", "inception_resnet_v2"), ("xception", "xception"),
     ("nasnet_mobile", "nasnet"), ("resnet-rs-50", "resnet_rs"), ("functional", None), ("sequential", None)],
)
def test_preprocess_guess_table(model_name, expected):
    from sglrp_widgets.cli_inputs import guess_preprocess

    assert guess_preprocess(model_name) == expected


def test_keras_applications_modes_match_their_preprocess_input():
    """The guide's modes are what each family's own preprocess_input does."""
    import keras

    x = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    families = {"vgg16": keras.applications.vgg16, "resnet50": keras.applications.resnet50,
                "resnet_v2": keras.applications.resnet_v2, "mobilenet_v2": keras.applications.mobilenet_v2,
                "mobilenet_v3": keras.applications.mobilenet_v3, "densenet": keras.applications.densenet,
                "efficientnet": keras.applications.efficientnet, "convnext": keras.applications.convnext,
                "inception_v3": keras.applications.inception_v3, "xception": keras.applications.xception}
    for name, module in families.items():
        np.testing.assert_allclose(cli.PREPROCESSORS[name][0](x), module.preprocess_input(x.copy()), atol=1e-4,
                                   err_msg=name)


def test_bundled_models_by_name(tmp_path, scene_files, monkeypatch, capsys):
    """--model takes any name of demo.MODELS (new entries appear without CLI changes)."""
    from dataclasses import replace

    extra = replace(demo.MODELS["cnn"], name="cnn_copy")
    monkeypatch.setitem(demo.MODELS, "cnn_copy", extra)
    assert cli.main(["explain", "--model", "cnn_copy", "--image", str(scene_files[0][0]), "--method", "lrp",
                     "--target", "star", "-o", str(tmp_path / "o")]) == 0
    assert [f.name for f in (tmp_path / "o").iterdir()] == [f"{scene_files[0][0].stem}_lrp_star.png"]
    assert "note" not in capsys.readouterr().err  # a bundled model's preprocessing is known
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    assert "cnn_copy" in capsys.readouterr().out
    out = tmp_path / "d.png"
    assert cli.main(["demo", "--model", "cnn_copy", "-o", str(out), "--methods", "SGLRP"]) == 0
    assert out.is_file()
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--model", "nope", "-o", str(out)])
    assert e.value.code == 2


def test_methods_command(capsys):
    assert cli.main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    from sglrp_widgets.methods import METHODS

    assert [ln.split()[0] for ln in lines] == list(METHODS)
    assert any(ln.startswith("lrp.epsilon ") and "epsilon=1e-07" in ln for ln in lines)


def test_method_the_model_cannot_use_is_one_line(tmp_path, capsys):
    import keras

    inp = keras.Input((8, 8, 3))
    out = keras.layers.Dense(4)(keras.layers.Flatten()(inp))
    keras.Model(inp, out).save(tmp_path / "dense.keras")
    _png(tmp_path / "x.png", 8, 8)
    rc = cli.main(["explain", "--model", str(tmp_path / "dense.keras"), "--image", str(tmp_path / "x.png"),
                   "--method", "grad_cam", "--preprocess", "scale01", "-o", str(tmp_path / "o")])
    assert rc == 2
    assert "convolutional layer" in _err_line(capsys)
