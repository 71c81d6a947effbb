"""The explorer's images on their own (numpy + Pillow, no TensorFlow): loading, inputs, regions, code."""

import numpy as np
import pytest

from sglrp_widgets.imageset import ImageSet, load_images, to_display_uint8


def test_inputs_are_preprocessed_once_and_displays_are_uint8():
    calls = []

    def pre(x):
        calls.append(x.shape)
        return x / 255.0

    s = ImageSet(np.full((2, 4, 4, 3), 255, np.uint8), preprocess=pre)
    assert len(s) == 2 and s.channels == 3
    np.testing.assert_allclose(s.input(1), 1.0)
    s.input(1)
    assert calls.count((1, 4, 4, 3)) == 2  # channels read image 0, then image 1 once
    assert s.display(0).dtype == np.uint8 and s.png(0)[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(to_display_uint8(np.ones((2, 2), np.float32)), np.full((2, 2, 3), 255))


def test_regions_use_the_chosen_class_box_and_say_when_it_is_missing():
    s = ImageSet(np.zeros((1, 8, 8, 3), np.uint8), boxes=[[(0, 0, 4, 4), (4, 4, 8, 8)]], box_labels=[[2, 5]])
    mask, what, note = s.region(0, 5, "star")
    assert what == "box of star" and note == "" and mask[5, 5] and not mask[1, 1]
    mask, what, note = s.region(0, 1, "ring")
    assert mask is None and note == "n/a: no box of “ring” in this image"
    unlabelled = ImageSet(np.zeros((1, 8, 8, 3), np.uint8), boxes=[(0, 0, 4, 4)])
    mask, what, _ = unlabelled.region(0, 1, "ring")
    assert what == "boxes" and mask[0, 0]
    masked = ImageSet(np.zeros((1, 8, 8, 3), np.uint8), masks=[np.eye(8, dtype=bool)])
    mask, what, _ = masked.region(0, 0, "x")
    assert what == "mask" and mask.sum() == 8
    assert ImageSet(np.zeros((1, 8, 8, 3), np.uint8)).region(0, 0, "x") == (None, "", "")


def test_boxes_as_dicts_and_bad_box_inputs():
    s = ImageSet(np.zeros((1, 8, 8, 3), np.uint8), boxes=[{3: (0, 0, 2, 2), 1: [(1, 1, 3, 3), (4, 4, 6, 6)]}])
    assert s.boxes(0) == [(0, 0, 2, 2, 3), (1, 1, 3, 3, 1), (4, 4, 6, 6, 1)]
    with pytest.raises(ValueError, match="box_labels needs boxes"):
        ImageSet(np.zeros((1, 8, 8, 3)), box_labels=[[1]])
    with pytest.raises(ValueError, match="box_labels has 2 entries for 1 images"):
        ImageSet(np.zeros((1, 8, 8, 3)), boxes=[(0, 0, 1, 1)], box_labels=[[1], [2]])
    with pytest.raises(ValueError, match="masks has 2 entries for 1 images"):
        ImageSet(np.zeros((1, 8, 8, 3)), masks=[np.zeros((8, 8))] * 2)


def test_code_names_the_users_images():
    arr = np.zeros((3, 4, 4, 3), np.uint8)
    assert ImageSet(arr, preprocess=lambda x: x).code(2) == "preprocess(images[2:3])"
    assert ImageSet(list(arr)).code(1) == "np.asarray(images[1], 'float32')[None]"


def test_load_images_shapes_and_errors(tmp_path):
    assert len(load_images(np.zeros((4, 4, 3)))) == 1  # one (H, W, C) image
    assert load_images(np.zeros((2, 5, 5)))[0].shape == (5, 5, 1)  # a grayscale batch
    with pytest.raises(ValueError, match="images is empty"):
        load_images([])
    with pytest.raises(ValueError, match=r"image 0 must have shape \(H, W, C\)"):
        load_images([np.zeros(5)])
    from PIL import Image

    p = tmp_path / "a.png"
    Image.fromarray(np.zeros((10, 6, 3), np.uint8)).save(p)
    assert load_images([str(p)], size=(4, 4))[0].shape == (4, 4, 3)
    assert "PIL.Image.open" in ImageSet([str(p)], size=(4, 4)).code(0)
