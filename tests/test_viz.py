"""Tests of sglrp_widgets.viz (colours asserted exactly)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from PIL import Image

from sglrp_widgets import viz

WHITE = [1.0, 1.0, 1.0]
SEISMIC_MIN = [0.0, 0.0, 0.3]  # dark blue
SEISMIC_MAX = [0.5, 0.0, 0.0]  # dark red
SEISMIC_HALF = [1.0, 0.0, 0.0]  # +0.5 * max: pure red
SEISMIC_NEG_HALF = [0.0, 0.0, 1.0]  # -0.5 * max: pure blue


def test_heatmap_rgba_seismic_colours():
    h = np.array([[-4.0, -2.0, 0.0, 2.0, 4.0]])
    rgba = viz.heatmap_rgba(h)
    assert rgba.shape == (1, 5, 4) and rgba.dtype == np.float32
    np.testing.assert_allclose(rgba[0, :, 3], 1.0)
    np.testing.assert_allclose(rgba[0, 0, :3], SEISMIC_MIN, atol=1e-6)
    np.testing.assert_allclose(rgba[0, 1, :3], SEISMIC_NEG_HALF, atol=1e-6)
    np.testing.assert_allclose(rgba[0, 2, :3], WHITE, atol=1e-6)
    np.testing.assert_allclose(rgba[0, 3, :3], SEISMIC_HALF, atol=1e-6)
    np.testing.assert_allclose(rgba[0, 4, :3], SEISMIC_MAX, atol=1e-6)


def test_symmetric_scale_uses_max_abs():
    # positive maximum 1 but negative extreme -4: zero is still white, +1 is light red
    rgba = viz.heatmap_rgba(np.array([[-4.0, 0.0, 1.0]]), norm="max")
    np.testing.assert_allclose(rgba[0, 1, :3], WHITE, atol=1e-6)
    np.testing.assert_allclose(viz.normalize_heatmap([[-4.0, 0.0, 1.0]], norm="max"), [[0.0, 0.5, 0.625]])
    r, g, b = rgba[0, 2, :3]
    assert r == pytest.approx(1.0) and g == pytest.approx(b) and 0.4 < g < 0.8


def test_non_symmetric_and_vmax():
    np.testing.assert_allclose(viz.normalize_heatmap([[2.0, 3.0, 6.0]], symmetric=False, norm="max"),
                               [[0.0, 0.25, 1.0]])
    np.testing.assert_allclose(viz.normalize_heatmap([[-1.0, 0.0, 3.0]], vmax=2.0), [[0.25, 0.5, 1.0]])
    rgba = viz.heatmap_rgba([[0.0, 1.0]], cmap="gray", symmetric=False)
    np.testing.assert_allclose(rgba[0, 0, :3], [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(rgba[0, 1, :3], [1, 1, 1], atol=1e-6)


def test_robust_scale_ignores_a_few_extreme_pixels():
    h = np.full((20, 20), 0.1)
    h[0, 0] = 50.0  # one hot pixel (0.25 % of the map)
    h[1, :] = -0.2
    assert viz.robust_scale(h, "max") == 50.0
    assert viz.robust_scale(h) == pytest.approx(0.2)  # the 99.5th percentile of |h|
    assert viz.robust_scale(h, positive_only=True) == pytest.approx(0.1)
    # the default normalisation shows the ordinary pixels, not only the hot one
    assert viz.normalize_heatmap(h)[5, 5] == pytest.approx(0.75)
    assert viz.normalize_heatmap(h, norm="max")[5, 5] == pytest.approx(0.501)
    # a map that is zero almost everywhere falls back to its maximum; all-zero gives 0
    sparse = np.zeros((20, 20))
    sparse[3, 3] = 2.0
    assert viz.robust_scale(sparse) == 2.0 and viz.robust_scale(np.zeros((2, 2))) == 0.0
    with pytest.raises(ValueError, match="norm must be one of"):
        viz.robust_scale(h, "median")


def test_colormap_lut_is_matplotlibs_table():
    import matplotlib

    lut = viz.colormap_lut("viridis")
    assert lut.shape == (257, 3) and lut.dtype == np.uint8
    ref = np.rint(matplotlib.colormaps["viridis"](np.linspace(0, 1, 257))[:, :3] * 255)
    np.testing.assert_array_equal(lut, ref)
    assert viz.colormap_lut("bwr")[128].tolist() == [255, 255, 255]  # zero is exactly white
    assert viz.is_diverging("RdBu_r") and viz.is_diverging("bwr") and not viz.is_diverging("viridis")
    with pytest.raises(ValueError, match="unknown colormap"):
        viz.colormap_lut("nope")


def test_display_overlay_fades_diverging_maps_and_keeps_the_image_at_zero():
    img = np.full((1, 3, 3), 100, np.uint8)
    h = np.array([[-1.0, 0.0, 1.0]])
    out = viz.display_overlay(img, h, cmap="bwr", opacity=1.0, norm="max")
    np.testing.assert_allclose(out[0, 1], 100 / 255, atol=1e-6)  # zero relevance: the image
    np.testing.assert_allclose(out[0, 0], [0, 0, 1], atol=1e-6)  # full magnitude: the colour
    pos = viz.display_overlay(img, h, cmap="bwr", opacity=1.0, positive_only=True, norm="max")
    np.testing.assert_allclose(pos[0, 0], 100 / 255, atol=1e-6)
    seq = viz.display_overlay(img, h, cmap="gray", opacity=0.5, norm="max")
    np.testing.assert_allclose(seq[0, 1], (100 / 255 + 128 / 255) / 2, atol=0.01)  # constant opacity


def test_explanation_figure_is_labelled():
    import io

    h = np.zeros((16, 16))
    h[2:6, 2:6] = 1.0
    h[10:14, 10:14] = -1.0
    fig = viz.explanation_figure(np.zeros((16, 16, 3)), h, title="star · 97 %", subtitle="SGLRP",
                                 legend=("against star", "for star"),
                                 boxes=[(2, 2, 6, 6, "star", True), (10, 10, 14, 14, "ring", False)])
    texts = [t.get_text() for t in fig.texts]
    assert "star · 97 %" in texts and "SGLRP" in texts
    assert any("for star" in t for t in texts) and any("against star" in t for t in texts)
    assert len(fig.axes[0].patches) == 4  # two boxes, each with a dark and a light outline
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("positive_only, labels", [(False, {"−1": (0.08, "left"), "0": (0.5, "center"),
                                                                 "+1": (0.92, "right")}),
                                                   (True, {"0": (0.08, "left"), "+1": (0.92, "right")})])
def test_explanation_figure_numbers_sit_at_the_ends_of_the_bar_they_name(positive_only, labels):
    """The positive-only bar shows the upper half of the colour map across its whole width: 0 at its left end."""
    h = np.zeros((16, 16))
    h[2:6, 2:6], h[10:14, 10:14] = 1.0, -1.0
    fig = viz.explanation_figure(np.zeros((16, 16, 3)), h, positive_only=positive_only, norm="max")
    found = {t.get_text(): (round(t.get_position()[0], 2), t.get_ha()) for t in fig.texts
             if t.get_text() in ("−1", "0", "+1")}
    assert found == labels
    assert fig.texts[-1].get_text() == "colour scale ends at the maximum" + (" (positive part)" if positive_only else "")


def test_degenerate_maps():
    np.testing.assert_allclose(viz.heatmap_rgba(np.zeros((3, 3)))[..., :3], 1.0, atol=1e-6)
    np.testing.assert_allclose(viz.normalize_heatmap(np.full((2, 2), 5.0), symmetric=False), 0.0)
    # (H, W, 1) is accepted as (H, W)
    assert viz.heatmap_rgba(np.zeros((4, 5, 1))).shape == (4, 5, 4)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 2, 3)), r"must be 2-D .* got shape \(2, 2, 3\)"),
        (np.array([[np.nan, 1.0]]), "non-finite"),
        (np.array([[np.inf, 1.0]]), "non-finite"),
    ],
)
def test_heatmap_rgba_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        viz.heatmap_rgba(bad)


def test_unknown_cmap_and_bad_vmax():
    with pytest.raises(ValueError, match="unknown colormap 'nope'"):
        viz.heatmap_rgba(np.zeros((2, 2)), cmap="nope")
    with pytest.raises(ValueError, match="vmax must be a positive finite number, got -1.0"):
        viz.normalize_heatmap(np.zeros((2, 2)), vmax=-1)
    with pytest.raises(ValueError, match="vmin must be a finite number, got nan"):
        viz.normalize_heatmap(np.zeros((2, 2)), symmetric=False, vmin=float("nan"))
    with pytest.raises(ValueError, match=r"vmin \(2.0\) must be below vmax \(1.0\)"):
        viz.heatmap_rgba(np.zeros((2, 2)), symmetric=False, vmin=2.0, vmax=1.0)


def test_image_to_float():
    np.testing.assert_allclose(viz.image_to_float(np.array([[[0, 51, 255]]], np.uint8)), [[[0, 0.2, 1]]])
    # floats in [0, 1] unchanged; other floats min-max scaled; gray repeated
    f = np.array([[[0.1, 0.2, 0.3]]])
    np.testing.assert_allclose(viz.image_to_float(f), f)
    np.testing.assert_allclose(viz.image_to_float(np.array([[-10.0, 10.0]])), [[[0] * 3, [1] * 3]])
    with pytest.raises(ValueError, match=r"image must have shape .* got \(2, 2, 5\)"):
        viz.image_to_float(np.zeros((2, 2, 5)))


def test_overlay_values():
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = 255
    h = np.array([[0.0, 1.0], [-1.0, 0.0]])
    # alpha 0: the (gray) image; alpha 1: the heatmap colours
    np.testing.assert_allclose(viz.overlay(img, h, alpha=0.0)[0, 0], [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(viz.overlay(img, h, alpha=0.0)[1, 1], [0, 0, 0], atol=1e-6)
    full = viz.overlay(img, h, alpha=1.0)
    np.testing.assert_allclose(full[0, 1], SEISMIC_MAX, atol=1e-6)
    np.testing.assert_allclose(full[1, 0], SEISMIC_MIN, atol=1e-6)
    np.testing.assert_allclose(full[1, 1], WHITE, atol=1e-6)
    half = viz.overlay(img, h, alpha=0.5)
    # black pixel, zero relevance: halfway between black and white
    np.testing.assert_allclose(half[1, 1], [0.5, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(half[0, 1], [0.25, 0.0, 0.0], atol=1e-6)
    # colour kept when grayscale=False
    col = np.zeros((1, 1, 3), np.uint8)
    col[0, 0] = [255, 0, 0]
    np.testing.assert_allclose(
        viz.overlay(col, np.zeros((1, 1)), alpha=0.5, grayscale=False)[0, 0], [1.0, 0.5, 0.5], atol=1e-6
    )
    np.testing.assert_allclose(viz.overlay(col, np.zeros((1, 1)), alpha=0.0)[0, 0], [0.299] * 3, atol=1e-6)


def test_overlay_errors():
    with pytest.raises(ValueError, match=r"heatmap shape \(3, 3\) does not match .* \(2, 2\)"):
        viz.overlay(np.zeros((2, 2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="alpha must be in"):
        viz.overlay(np.zeros((2, 2, 3)), np.zeros((2, 2)), alpha=1.5)


def test_save_heatmap_png_pixels(tmp_path):
    h = np.array([[-1.0, 0.0], [1.0, 0.5]])
    p = viz.save_heatmap_png(tmp_path / "h.png", h)
    assert p == tmp_path / "h.png"
    px = np.asarray(Image.open(p))
    assert px.shape == (2, 2, 3) and px.dtype == np.uint8
    assert px[0, 0].tolist() == [0, 0, 76]  # 0.3 * 255 = 76.5 -> 76 (float32 rounding)
    assert px[0, 1].tolist() == [255, 255, 255]
    assert px[1, 0].tolist() == [128, 0, 0]
    assert px[1, 1].tolist() == [255, 0, 0]
    # upscaled with an image underneath, alpha 1 -> same colours, 3x larger
    p2 = viz.save_heatmap_png(tmp_path / "o.png", h, image=np.zeros((2, 2, 3), np.uint8), alpha=1.0, scale=3)
    px2 = np.asarray(Image.open(p2))
    assert px2.shape == (6, 6, 3)
    assert px2[5, 5].tolist() == [255, 0, 0] and px2[0, 3].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="scale must be a positive integer, got 0"):
        viz.save_heatmap_png(tmp_path / "x.png", h, scale=0)


def test_plot_grid_layout_and_pixels():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 2, 8, 8))
    maps[1, 1] = 0.0
    img = np.full((8, 8, 3), 200, np.uint8)
    fig = viz.plot_grid(img, maps, ["LRP", "CLRP", "SGLRP"], ["cat", "dog"], title="t")
    assert len(fig.axes) == 3 * 3 + 1        # the grid, then the colour key's bar
    # first column is the input (first row only), then the maps
    assert fig.axes[0].get_title() == "input"
    assert [fig.axes[i].get_title() for i in (1, 2)] == ["cat", "dog"]
    assert [fig.axes[3 * r + 1].get_ylabel() for r in range(3)] == ["LRP", "CLRP", "SGLRP"]
    assert len(fig.axes[3].get_images()) == 0  # no image repeated in row 2
    shown = fig.axes[3 * 1 + 2].get_images()[0].get_array()
    np.testing.assert_allclose(np.asarray(shown)[..., :3], 1.0, atol=1e-6)  # all-zero map is white
    shown0 = np.asarray(fig.axes[1].get_images()[0].get_array())
    np.testing.assert_allclose(shown0, viz.heatmap_rgba(maps[0, 0]), atol=1e-6)
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # renders headless (Agg) without pyplot
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_grid_shared_scale_and_overlay():
    maps = np.zeros((1, 2, 4, 4))
    maps[0, 0, 0, 0] = 1.0
    maps[0, 1, 0, 0] = 4.0
    fig = viz.plot_grid(None, maps, shared_scale=True, legend=None)
    assert len(fig.axes) == 2
    a = np.asarray(fig.axes[0].get_images()[0].get_array())
    b = np.asarray(fig.axes[1].get_images()[0].get_array())
    np.testing.assert_allclose(b[0, 0, :3], SEISMIC_MAX, atol=1e-6)
    # 1/4 of the shared maximum is a light red, not the darkest red
    assert a[0, 0, 0] == pytest.approx(1.0) and a[0, 0, 1] > 0.4
    fig2 = viz.plot_grid(np.zeros((2, 4, 4, 3)), np.zeros((2, 1, 4, 4)), alpha=1.0, legend=None)
    assert len(fig2.axes) == 4
    assert len(fig2.axes[2].get_images()) == 1  # per-row images shown in every row


def test_plot_grid_positive_rows_are_drawn_from_zero():
    # row 0 signed (-1 .. 1), row 1 with no zeros (0.5 .. 1, as Grad-CAM++ maps often are); max norm
    maps = np.stack([np.linspace(-1, 1, 16).reshape(4, 4), np.linspace(0.5, 1, 16).reshape(4, 4)])[:, None]

    def corners(fig, row):    # the colours of the smallest and the largest value of a row's map
        px = np.asarray(fig.axes[row].get_images()[0].get_array())[..., :3]
        return px[0, 0], px[-1, -1]

    bwr, viridis = matplotlib.colormaps["bwr"], matplotlib.colormaps["viridis"]
    fig = viz.plot_grid(None, maps, cmap="bwr", norm="max", positive_only=[True, False])
    np.testing.assert_allclose(corners(fig, 0), [[1.0, 1.0, 1.0], bwr(1.0)[:3]], atol=1e-6)  # -1 is 0: white
    fig = viz.plot_grid(None, maps, cmap="viridis", norm="max", positive_only=True)
    np.testing.assert_allclose(corners(fig, 1), [viridis(0.5)[:3], viridis(1.0)[:3]], atol=1e-6)  # 0.5 of 1
    np.testing.assert_allclose(corners(fig, 0)[0], viridis(0.0)[:3], atol=1e-6)
    fig = viz.plot_grid(None, maps, cmap="viridis", norm="max")         # signed: 0 in the middle
    np.testing.assert_allclose(corners(fig, 1), [viridis(0.75)[:3], viridis(1.0)[:3]], atol=1e-6)
    with pytest.raises(ValueError, match="got 1 positive_only flags for 2 rows"):
        viz.plot_grid(None, maps, positive_only=[True])


def test_plot_grid_shared_scale_is_found_over_what_is_drawn():
    # row 0 positive-only with a strong negative part (-4) that is not drawn; row 1 signed, up to 2
    maps = np.zeros((2, 1, 4, 4))
    maps[0, 0, 0, 0], maps[0, 0, 0, 1] = -4.0, 1.0
    maps[1, 0, 0, 0] = 2.0
    fig = viz.plot_grid(None, maps, cmap="viridis", norm="max", shared_scale=True, positive_only=[True, False])
    pos = np.asarray(fig.axes[0].get_images()[0].get_array())[..., :3]
    signed = np.asarray(fig.axes[1].get_images()[0].get_array())[..., :3]
    viridis = matplotlib.colormaps["viridis"]
    np.testing.assert_allclose(pos[0, 1], viridis(0.5)[:3], atol=1e-6)      # 1 of the shared 2, from 0
    np.testing.assert_allclose(pos[0, 0], viridis(0.0)[:3], atol=1e-6)      # the clipped -4 is 0
    np.testing.assert_allclose(signed[0, 0], viridis(1.0)[:3], atol=1e-6)   # 2 is the top of the scale


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.texts]


def test_plot_grid_carries_its_colour_key():
    """The grid's last axes is a colour bar along the map columns, with what its ends mean and how the maps were
    scaled; a positive-only grid's bar starts at 0 and names only the high end."""
    maps = np.random.default_rng(0).normal(size=(2, 3, 8, 8))
    fig = viz.plot_grid(np.zeros((8, 8, 3)), maps, ["LRP", "SGLRP"], ["a", "b", "c"], cmap="bwr")
    bar = fig.axes[-1]
    ramp = np.asarray(bar.get_images()[0].get_array())[0, :, :3] / 255.0       # colormap_lut is uint8
    bwr = matplotlib.colormaps["bwr"]
    np.testing.assert_allclose([ramp[0], ramp[-1]], [bwr(0.0)[:3], bwr(1.0)[:3]], atol=1 / 255)
    grid_left, grid_right = fig.axes[1].get_position().x0, fig.axes[3].get_position().x1   # the map columns
    assert bar.get_position().x0 == pytest.approx(grid_left) and bar.get_position().x1 == pytest.approx(grid_right)
    assert bar.get_position().y1 < min(ax.get_position().y0 for ax in fig.axes[:-1])      # under the grid
    texts = " ".join(_texts(fig)).replace("\n", " ")
    assert "against the column's class" in texts and "for the column's class" in texts
    assert "each map on its own scale" in texts

    fig = viz.plot_grid(None, np.abs(maps), cmap="bwr", positive_only=True, shared_scale=True, norm="max",
                        legend=("no evidence", "evidence for the class"))
    ramp = np.asarray(fig.axes[-1].get_images()[0].get_array())[0, :, :3] / 255.0
    np.testing.assert_allclose([ramp[0], ramp[-1]], [[1.0, 1.0, 1.0], bwr(1.0)[:3]], atol=1e-2)   # from 0: white
    texts = " ".join(_texts(fig)).replace("\n", " ")
    assert "no evidence" not in texts and "evidence for the class" in texts
    assert f"+{np.abs(maps).max():.2g}" in _texts(fig) and "one scale for all maps, ending at the maximum" in texts
    assert len(viz.plot_grid(None, maps, legend=None).axes) == 2 * 3

def test_plot_grid_savefig(tmp_path):
    fig = viz.plot_grid(np.zeros((8, 8, 3)), np.ones((2, 2, 8, 8)), ["a", "b"], ["c", "d"])
    fig.savefig(tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"maps": np.zeros((2, 8, 8))}, r"maps must have shape \(rows, cols, H, W\), got \(2, 8, 8\)"),
        ({"maps": np.zeros((2, 2, 8, 8)), "row_labels": ["a"]}, "got 1 row_labels for 2 rows"),
        ({"maps": np.zeros((2, 2, 8, 8)), "col_labels": ["a", "b", "c"]}, "got 3 col_labels for 2 columns"),
        ({"maps": np.zeros((2, 2, 8, 8)), "images": np.zeros((3, 8, 8, 3))}, "got 3 images for 2 rows"),
        ({"maps": np.zeros((1, 1, 8, 8)), "images": np.zeros((9, 9, 3))}, r"do not match the maps' \(8, 8\)"),
        ({"maps": np.full((1, 1, 2, 2), np.nan)}, "non-finite"),
        ({"maps": np.zeros((1, 1, 2, 2)), "legend": "for"}, "legend must be two strings"),
    ],
)
def test_plot_grid_errors(kwargs, match):
    kwargs.setdefault("images", None)
    with pytest.raises(ValueError, match=match):
        viz.plot_grid(**kwargs)


def test_compare_figure_with_engine():
    engine = pytest.importorskip("sglrp_widgets.engine")
    from sglrp_widgets import demo

    images, labels, _ = demo.make_scenes(1, objects=2, seed=3)
    x = demo.preprocess(images[0])
    model = demo.load_model()
    targets = labels[0].tolist()
    fig = viz.compare_figure(
        model, x, ["lrp", "sglrp", ("lrp.epsilon", {"epsilon": 0.1})], targets,
        preprocess=demo.preprocess, class_names=demo.class_names, raw_image=images[0],
    )
    assert len(fig.axes) == 3 * (1 + 2) + 1          # and the colour key
    titles = [fig.axes[1].get_title(), fig.axes[2].get_title()]
    assert titles[0].startswith(demo.class_names[targets[0]])
    assert titles[1].startswith(demo.class_names[targets[1]])
    # the SGLRP cell shows exactly the engine's map, normalized per map
    out = engine.explain(model, x[None], method="sglrp", targets=[targets], preprocess=demo.preprocess)
    shown = np.asarray(fig.axes[3 + 2].get_images()[0].get_array())
    np.testing.assert_allclose(shown, viz.heatmap_rgba(np.asarray(out.heatmap())[0, 1]), atol=1e-5)
    with pytest.raises(ValueError, match="targets must name at least one class"):
        viz.compare_figure(model, x, ["lrp"], [])
