"""Exact-value tests for sglrp_widgets.metrics on hand-made maps and toy models."""

import ast
import doctest
import importlib
import pathlib

import numpy as np
import pytest

metrics = importlib.import_module("sglrp_widgets.metrics")
from sglrp_widgets.metrics import (  # noqa: E402
    aopc,
    area_under_curve,
    boxes_to_masks,
    deletion_curve,
    insertion_curve,
    mass_in_box,
    pointing_game,
    relevance_rank_accuracy,
    spearman,
)


def linear_fn(w):
    """f(x)[c] = sum_p w[c, p] x_p: a linear toy classifier (C classes)."""
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))

    def fn(x):
        return x.reshape(len(x), -1).astype(np.float64) @ w.T

    return fn


# --------------------------------------------------------------------- module hygiene
def test_metrics_imports_numpy_only():
    src = pathlib.Path(metrics.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0] if node.level == 0 else ".")
    assert imported <= {"numpy", "typing", "__future__"}, imported


def test_docstring_examples_run():
    res = doctest.testmod(metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted >= 10 and res.failed == 0


# --------------------------------------------------------------------- boxes_to_masks
def test_boxes_to_masks_exclusive_ends():
    m = boxes_to_masks([[1, 0, 3, 2], [0, 0, 4, 4]], (4, 5))
    assert m.shape == (2, 4, 5) and m.dtype == bool
    expected0 = np.zeros((4, 5), bool)
    expected0[1:3, 0:2] = True
    np.testing.assert_array_equal(m[0], expected0)
    assert m[1].sum() == 16 and not m[1][:, 4].any()


def test_boxes_to_masks_leading_dims():
    m = boxes_to_masks(np.array([[[0, 0, 1, 1], [2, 2, 4, 4]]]), (4, 4))
    assert m.shape == (1, 2, 4, 4)
    assert m[0, 0].sum() == 1 and m[0, 1].sum() == 4


@pytest.mark.parametrize(
    "box,msg",
    [
        ([2, 0, 2, 3], "empty"),
        ([0, 3, 2, 1], "empty"),
        ([0, 0, 5, 2], "outside"),
        ([-1, 0, 2, 2], "outside"),
        ([0.5, 0, 2, 2], "integer"),
    ],
)
def test_boxes_to_masks_bad_box(box, msg):
    with pytest.raises(ValueError, match=msg) as e:
        boxes_to_masks([box], (4, 4))
    # the message names the offending value
    assert str(box[0]) in str(e.value)


def test_boxes_to_masks_bad_shape():
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        boxes_to_masks([[0, 0, 1]], (4, 4))
    with pytest.raises(ValueError, match="shape must be"):
        boxes_to_masks([[0, 0, 1, 1]], (4, 4, 3))


# --------------------------------------------------------------------- pointing game
def test_pointing_game_hits_and_misses():
    h = np.zeros((3, 6, 6))
    h[0, 1, 1] = 5.0      # inside box
    h[1, 5, 5] = 5.0      # outside
    h[2, 2, 4] = 5.0      # on the exclusive edge x1=4 -> outside
    boxes = np.array([[0, 0, 3, 4]] * 3)
    np.testing.assert_array_equal(pointing_game(h, boxes), [True, False, False])


def test_pointing_game_masks_equal_boxes():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(10, 8, 8))
    boxes = np.array([[1, 2, 5, 7]] * 10)
    np.testing.assert_array_equal(pointing_game(h, boxes), pointing_game(h, boxes_to_masks(boxes, (8, 8))))


def test_pointing_game_channel_sum():
    r = np.zeros((1, 4, 4, 3))
    r[0, 0, 0, 0] = 3.0               # biggest single channel value, outside
    r[0, 3, 3, :] = 1.5               # largest channel sum (4.5), inside
    assert pointing_game(r, [[2, 2, 4, 4]])[0]
    assert not pointing_game(r[..., 0], [[2, 2, 4, 4]])[0]


def test_pointing_game_tolerance_euclidean():
    h = np.zeros((1, 10, 10))
    h[0, 0, 0] = 1.0
    box = [[3, 4, 6, 6]]   # nearest box pixel (3, 4): distance 5
    assert not pointing_game(h, box, tolerance=4.99)[0]
    assert pointing_game(h, box, tolerance=5)[0]


def test_pointing_game_constant_map_is_miss():
    h = np.zeros((2, 4, 4))
    h[1] = 7.0
    np.testing.assert_array_equal(pointing_game(h, [[0, 0, 2, 2]] * 2), [False, False])


def test_pointing_game_validation():
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        pointing_game(np.ones((2, 4, 4)), [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(np.ones((1, 4, 4)), [[0, 0, 1, 1]], tolerance=-1)
    with pytest.raises(ValueError, match="NaN"):
        pointing_game(np.full((1, 4, 4), np.nan), [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"\(5, 4\)"):
        pointing_game(np.ones((5, 4)), [[0, 0, 1, 1]])


# --------------------------------------------------------------------- mass in box
def test_mass_in_box_exact():
    h = np.zeros((4, 4, 4))
    h[0, :2, :2] = 1.0                             # all positive mass inside -> 1
    h[1, 0, 0] = 2.0; h[1, 3, 3] = 2.0             # half -> 0.5
    h[2, 0, 0] = 1.0; h[2, 3, 3] = 3.0; h[2, 0, 1] = -10.0   # negatives ignored -> 0.25
    h[3] = -1.0                                    # no positive relevance -> 0
    np.testing.assert_allclose(mass_in_box(h, [[0, 0, 2, 2]] * 4), [1.0, 0.5, 0.25, 0.0], rtol=0, atol=0)


def test_mass_in_box_channels_summed_before_relu():
    r = np.zeros((1, 2, 2, 2))
    r[0, 0, 0] = [3.0, -2.0]     # channel sum +1, inside
    r[0, 1, 1] = [-1.0, 4.0]     # channel sum +3, outside
    assert mass_in_box(r, [[0, 0, 1, 1]])[0] == 0.25


def test_mass_in_box_mask_input_and_validation():
    h = np.arange(16, dtype=float).reshape(1, 4, 4)
    m = np.zeros((1, 4, 4), int)
    m[0, 3, :] = 1
    assert mass_in_box(h, m)[0] == pytest.approx((12 + 13 + 14 + 15) / 120.0, abs=0)
    with pytest.raises(ValueError, match="0 and 1"):
        mass_in_box(h, m * 2)
    with pytest.raises(ValueError, match=r"\(1, 4, 4\)"):
        mass_in_box(h, np.zeros((1, 4, 5), bool))


# --------------------------------------------------------------------- rank accuracy
def test_relevance_rank_accuracy_exact():
    h = np.array([[[4.0, 3.0], [2.0, 1.0]]] * 3)
    masks = np.array([
        [[True, True], [False, False]],    # K=2, top-2 = {4,3} both inside -> 1
        [[True, False], [True, False]],    # K=2, top-2 = {4,3}, one inside -> 0.5
        [[False, False], [False, True]],   # K=1, top-1 = {4} outside -> 0
    ])
    np.testing.assert_array_equal(relevance_rank_accuracy(h, masks), [1.0, 0.5, 0.0])


def test_relevance_rank_accuracy_ties_expected_value():
    # constant map: chance level K / (H W)
    h = np.zeros((1, 4, 4))
    assert relevance_rank_accuracy(h, [[0, 0, 2, 2]])[0] == 4 / 16
    # top value clear, then a 3-way tie for 1 remaining slot with one tied pixel inside
    h = np.array([[[5.0, 1.0], [1.0, 1.0]]])
    m = np.array([[[True, True], [False, False]]])     # K = 2
    assert relevance_rank_accuracy(h, m)[0] == pytest.approx((1 + 1 / 3) / 2, abs=1e-15)


def test_relevance_rank_accuracy_empty_mask():
    with pytest.raises(ValueError, match="mask 1 is empty"):
        relevance_rank_accuracy(np.ones((2, 2, 2)), np.array([[[1, 0], [0, 0]], [[0, 0], [0, 0]]]))


# --------------------------------------------------------------------- deletion / insertion
W4 = np.array([4.0, 3.0, 2.0, 1.0])


def test_deletion_curve_linear_by_hand():
    x = np.ones((1, 2, 2, 1))
    fr, curve = deletion_curve(linear_fn(W4), x, W4.reshape(1, 2, 2), 0, steps=4)
    np.testing.assert_array_equal(fr, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(curve, [[10, 6, 3, 1, 0]])
    assert area_under_curve(curve)[0] == 3.75
    assert area_under_curve(curve[0], fr) == 3.75


def test_deletion_order_follows_heatmap_not_weights():
    # reversed map -> least relevant first -> slower drop
    x = np.ones((1, 2, 2, 1))
    _, curve = deletion_curve(linear_fn(W4), x, W4[::-1].reshape(1, 2, 2), 0, steps=4)
    np.testing.assert_array_equal(curve, [[10, 9, 7, 4, 0]])


def test_insertion_curve_linear_by_hand():
    x = np.ones((1, 2, 2, 1))
    fr, curve = insertion_curve(linear_fn(W4), x, W4.reshape(1, 2, 2), 0, steps=4, baseline="zero")
    np.testing.assert_array_equal(curve, [[0, 4, 7, 9, 10]])
    assert area_under_curve(curve)[0] == pytest.approx(6.25, abs=1e-12)


def test_deletion_curve_coarse_steps_and_targets_and_channels():
    # 2 classes, 2 channels; class 1 weights are twice class 0's; 2 pixels per step
    x = np.ones((2, 2, 2, 2))
    w0 = np.repeat(W4, 2)                       # same weight on both channels of a pixel
    fn = linear_fn(np.stack([w0, 2 * w0]))
    maps = np.broadcast_to(W4.reshape(1, 2, 2, 1), (2, 2, 2, 2)) / 2.0
    fr, curve = deletion_curve(fn, x, maps, [0, 1], steps=2)
    np.testing.assert_array_equal(fr, [0, 0.5, 1.0])
    np.testing.assert_array_equal(curve, [[20, 6, 0], [40, 12, 0]])


@pytest.mark.parametrize(
    "baseline,expected",
    [
        (0.5, [[10, 8, 6.5, 5.5, 5.0]]),
        ("mean", None),
    ],
)
def test_deletion_curve_baselines(baseline, expected):
    x = np.ones((1, 2, 2, 1))
    if baseline == "mean":
        x = np.array([1.0, 2.0, 3.0, 6.0]).reshape(1, 2, 2, 1)   # mean 3
        # order by map W4: pixel values 1,2,3,6 replaced by 3 in turn
        # f = 4*1+3*2+2*3+1*6 = 22 -> 4*3+... : 22+8=30, +3=33, +0=33, -3=30
        expected = [[22, 30, 33, 33, 30]]
    _, curve = deletion_curve(linear_fn(W4), x, W4.reshape(1, 2, 2), 0, steps=4, baseline=baseline)
    np.testing.assert_allclose(curve, expected, rtol=0, atol=1e-12)


def test_blur_baseline_keeps_constant_image_and_smooths():
    x = np.full((1, 6, 6, 1), 2.0)
    _, curve = deletion_curve(linear_fn(np.ones(36)), x, np.arange(36.0).reshape(1, 6, 6), 0,
                              steps=6, baseline="blur")
    np.testing.assert_allclose(curve, 72.0, rtol=1e-6)
    # a single bright pixel is spread out by the blur: its own value drops
    x = np.zeros((1, 9, 9, 1)); x[0, 4, 4] = 1.0
    w = np.zeros(81); w[40] = 1.0
    _, curve = deletion_curve(linear_fn(w), x, x[..., 0], 0, steps=81, baseline="blur", blur_sigma=1.0,
                              dtype=np.float64)
    assert curve[0, 0] == 1.0 and 0.1 < curve[0, 1] < 0.2   # 1/(2 pi) ~ 0.159 at the centre


def test_deletion_curve_chunking_is_exact_and_bounded():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 4, 2))
    maps = rng.normal(size=(3, 4, 4))
    w = rng.normal(size=(5, 32))
    sizes = []

    def fn(b):
        sizes.append(len(b))
        return linear_fn(w)(b)

    a = deletion_curve(fn, x, maps, [0, 3, 4], steps=8, batch_size=1000, dtype=np.float64).scores
    assert sizes == [27]
    sizes.clear()
    b = deletion_curve(fn, x, maps, [0, 3, 4], steps=8, batch_size=5, dtype=np.float64).scores
    assert max(sizes) <= 5 and sum(sizes) == 27
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # each row is the target score of the image with the top pixels removed
    order = np.argsort(-maps[1].ravel(), kind="stable")
    xd = x[1].reshape(16, 2).copy()
    xd[order[:6]] = 0
    assert b[1, 3] == pytest.approx(float(w[3] @ xd.ravel()), abs=1e-12)


def test_perturbation_validation_messages():
    x = np.ones((1, 2, 2, 1))
    fn = linear_fn(W4)
    with pytest.raises(ValueError, match="'median'"):
        deletion_curve(fn, x, np.ones((1, 2, 2)), 0, steps=2, baseline="median")
    with pytest.raises(ValueError, match=r"\(1, 3, 2\)"):
        deletion_curve(fn, x, np.ones((1, 3, 2)), 0, steps=2)
    with pytest.raises(ValueError, match="steps"):
        deletion_curve(fn, x, np.ones((1, 2, 2)), 0, steps=5)
    with pytest.raises(ValueError, match="target 3"):
        deletion_curve(fn, x, np.ones((1, 2, 2)), 3, steps=2)
    with pytest.raises(ValueError, match=r"\(3, C\)|batch, classes"):
        deletion_curve(lambda b: b.reshape(-1), x, np.ones((1, 2, 2)), 0, steps=2)
    with pytest.raises(ValueError, match="targets"):
        deletion_curve(fn, x, np.ones((1, 2, 2)), [0, 0], steps=2)
    with pytest.raises(ValueError, match="images"):
        deletion_curve(fn, np.ones((2, 2, 1)), np.ones((1, 2, 2)), 0, steps=2)


def test_area_under_curve_nonuniform_and_validation():
    assert area_under_curve([0.0, 1.0, 1.0], [0.0, 0.5, 1.0]) == 0.75
    assert area_under_curve([1.0, 1.0]) == 1.0
    with pytest.raises(ValueError, match="fractions"):
        area_under_curve([1.0, 1.0], [0.0, 0.2, 1.0])
    with pytest.raises(ValueError, match="curve"):
        area_under_curve([[[1.0, 2.0]]])


# --------------------------------------------------------------------- AOPC
def test_aopc_toy_regions_by_hand():
    # 4x4 image of ones, 2x2 regions. Linear model weights per region (row-major regions):
    # r0: 1, r1: 4, r2: 2, r3: 3 (each of the 4 pixels in a region has that weight)
    rw = np.array([[1, 4], [2, 3]], float)
    w = np.kron(rw, np.ones((2, 2))).ravel()
    x = np.ones((1, 4, 4, 1))
    heat = np.kron(rw, np.ones((2, 2)))[None]           # perfect map: MoRF = r1, r3, r2, r0
    val, curve = aopc(linear_fn(w), x, heat, 0, region=2, baseline="zero", return_curve=True)
    # f(x^0) = 4 * (1+4+2+3) = 40; remove 16, 12, 8, 4 -> 24, 12, 4, 0
    np.testing.assert_array_equal(curve, [[40, 24, 12, 4, 0]])
    assert val[0] == (0 + 16 + 28 + 36 + 40) / 5
    # fewer steps
    assert aopc(linear_fn(w), x, heat, 0, region=2, steps=2, baseline="zero")[0] == (0 + 16 + 28) / 3
    # an anti-correlated map scores lower
    assert aopc(linear_fn(w), x, -heat, 0, region=2, baseline="zero")[0] == (0 + 4 + 12 + 24 + 40) / 5


def test_aopc_partial_regions():
    # 3x3 image, region 2 -> regions of 4, 2, 2, 1 pixels
    x = np.ones((1, 3, 3, 1))
    w = np.ones(9)
    heat = np.zeros((1, 3, 3))
    heat[0, 2, 2] = 10.0      # the 1-pixel region first
    _, curve = aopc(linear_fn(w), x, heat, 0, region=2, baseline="zero", return_curve=True)
    # then ties (all 0) in row-major region order: r0 (4 px), r1 (2 px), r2 (2 px)
    np.testing.assert_array_equal(curve, [[9, 8, 4, 2, 0]])


def test_aopc_uniform_noise_seeded():
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(2, 8, 8, 3))
    heat = rng.normal(size=(2, 8, 8))
    w = rng.normal(size=(4, 8 * 8 * 3))
    a = aopc(linear_fn(w), x, heat, [1, 2], region=4, seed=7)
    b = aopc(linear_fn(w), x, heat, [1, 2], region=4, seed=7)
    c = aopc(linear_fn(w), x, heat, [1, 2], region=4, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # a degenerate noise range equals the constant baseline
    d = aopc(linear_fn(w), x, heat, [1, 2], region=4, noise_range=(0.25, 0.25))
    e = aopc(linear_fn(w), x, heat, [1, 2], region=4, baseline=0.25)
    np.testing.assert_allclose(d, e, rtol=1e-12)
    with pytest.raises(ValueError, match="region"):
        aopc(linear_fn(w), x, heat, 0, region=0)
    with pytest.raises(ValueError, match="'noise'"):
        aopc(linear_fn(w), x, heat, 0, baseline="noise")
    with pytest.raises(ValueError, match="steps"):
        aopc(linear_fn(w), x, heat, 0, region=4, steps=5)


# --------------------------------------------------------------------- spearman
def test_spearman_known_values():
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 9]) == 1.0
    assert spearman([1, 2, 3, 4, 5], [9, 7, 5, 3, 1]) == -1.0
    # no ties: 1 - 6 * sum d^2 / (n (n^2 - 1)); ranks b = [2, 1, 4, 3, 5]: sum d^2 = 4 -> 0.8
    assert spearman([1, 2, 3, 4, 5], [20, 10, 40, 30, 50]) == pytest.approx(0.8, abs=1e-15)
    # monotone transform invariance
    a = np.array([0.3, -1.0, 2.0, 5.0, 0.0])
    assert spearman(a, np.exp(a)) == pytest.approx(1.0, abs=1e-15)


def test_spearman_ties_averaged():
    # ranks b = [1, 2.5, 2.5, 4] -> rho = 4.5 / sqrt(5 * 4.5) = sqrt(0.9)
    assert spearman([1, 2, 3, 4], [1, 2, 2, 3]) == pytest.approx(np.sqrt(0.9), abs=1e-15)
    # ties in both: a ranks [1.5, 1.5, 3, 4], b ranks [1, 2.5, 2.5, 4]
    # deviations a: [-1, -1, .5, 1.5] (ss 4.5), b: [-1.5, 0, 0, 1.5] (ss 4.5); cov = 1.5 + 2.25 = 3.75
    assert spearman([7, 7, 8, 9], [1, 2, 2, 3]) == pytest.approx(3.75 / 4.5, abs=1e-15)


def test_spearman_batched_and_constant():
    a = np.stack([np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(2, 3)])
    b = np.stack([np.arange(6.0).reshape(2, 3), -np.arange(6.0).reshape(2, 3)])
    np.testing.assert_array_equal(spearman(a, b), [1.0, -1.0])
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="same shape"):
        spearman([1, 2, 3], [1, 2])
