"""mrcnn.utils: resize/pad and its inverse, mini masks, molding and image meta."""

import keras
import numpy as np
import pytest

from mrcnn import utils as U
from mrcnn.boxes import compute_overlaps_masks
from mrcnn.config import Config


def _ellipse_mask(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_resize_image_square_scales_long_side_and_centres():
    image, window, scale, padding, crop = U.resize_image(_image(100, 50), 64, 128, mode="square")
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert scale == pytest.approx(1.28)
    assert window == (0, 32, 128, 96)
    assert padding == [(0, 0), (32, 32), (0, 0)] and crop is None
    assert image[:, :32].max() == 0 and image[:, 96:].max() == 0


def test_resize_image_none_returns_input():
    original = _image(30, 40)
    image, window, scale, padding, crop = U.resize_image(original, mode="none")
    assert image is original and window == (0, 0, 30, 40) and scale == 1


def test_resize_image_pad64_pads_to_multiples_of_64():
    image, window, scale, padding, _ = U.resize_image(_image(70, 130), 64, 1024, mode="pad64")
    assert scale == 1 and image.shape == (128, 192, 3)
    assert padding == [(29, 29), (31, 31), (0, 0)]
    assert window == (29, 31, 99, 161)


def test_resize_image_crop_is_reproducible_with_rng():
    first = U.resize_image(_image(100, 120), 64, mode="crop", rng=np.random.default_rng(3))
    second = U.resize_image(_image(100, 120), 64, mode="crop", rng=np.random.default_rng(3))
    assert first[0].shape == (64, 64, 3)
    assert first[4] == second[4] and first[2] == 1
    y, x, _, _ = first[4]
    np.testing.assert_array_equal(first[0], _image(100, 120)[y : y + 64, x : x + 64])


@pytest.mark.parametrize("shape", [(100, 50), (37, 91), (256, 256)])
def test_resize_then_crop_window_and_resize_back_restores_shape(shape):
    original = _image(*shape)
    image, window, _, _, _ = U.resize_image(original, 64, 128, mode="square")
    y1, x1, y2, x2 = window
    restored = U.resize(image[y1:y2, x1:x2], shape)
    assert restored.shape == original.shape


def test_resize_mask_aligns_with_resized_image_and_unmolds_back():
    h, w = 90, 60
    masks = np.stack([_ellipse_mask(h, w, 30, 25, 20, 15), _ellipse_mask(h, w, 70, 40, 12, 10)], -1)
    image, window, scale, padding, crop = U.resize_image(_image(h, w), 64, 128, mode="square")
    resized = U.resize_mask(masks, scale, padding, crop)
    assert resized.shape == (128, 128, 2) and resized.dtype == bool
    assert not resized[: window[0]].any() and not resized[:, : window[1]].any()
    y1, x1, y2, x2 = window
    back = np.stack(
        [
            U.unmold_mask(resized[y1:y2, x1:x2, i].astype(np.float32), (0, 0, h, w), (h, w))
            for i in range(2)
        ],
        -1,
    )
    assert np.diag(compute_overlaps_masks(masks, back)).min() >= 0.95


def test_extract_bboxes_is_tight_and_exclusive():
    mask = np.zeros((10, 12, 3), bool)
    mask[2:5, 3:9, 0] = True
    mask[7, 11, 1] = True
    boxes = U.extract_bboxes(mask)
    assert boxes.dtype == np.int32
    np.testing.assert_array_equal(boxes, [[2, 3, 5, 9], [7, 11, 8, 12], [0, 0, 0, 0]])


def test_minimize_then_expand_mask_roundtrip():
    masks = np.stack(
        [_ellipse_mask(80, 80, 30, 30, 20, 12), _ellipse_mask(80, 80, 60, 55, 9, 14)], -1
    )
    boxes = U.extract_bboxes(masks)
    mini = U.minimize_mask(boxes, masks, (28, 28))
    assert mini.shape == (28, 28, 2) and mini.dtype == bool
    expanded = U.expand_mask(boxes, mini, (80, 80, 3))
    assert np.diag(compute_overlaps_masks(masks, expanded)).min() >= 0.95


def test_minimize_mask_rejects_empty_box():
    with pytest.raises(ValueError, match="area of zero"):
        U.minimize_mask(np.zeros((1, 4), int), np.zeros((5, 5, 1), bool), (4, 4))


def test_unmold_mask_thresholds_and_clips_to_image():
    soft = np.array([[0.9, 0.2], [0.6, 0.4]], np.float32)
    full = U.unmold_mask(soft, (-2, 3, 2, 7), (4, 6))
    expected = np.zeros((4, 6), bool)
    expected[0:2, 3:5] = True  # bottom-left quadrant of the 4x4 box (value 0.6), clipped at x=6
    expected[0:2, 5] = False
    np.testing.assert_array_equal(full, expected)


def test_mold_unmold_image_roundtrip():
    config = Config()
    image = _image(8, 8)
    molded = U.mold_image(image, config)
    assert molded.dtype == np.float32
    np.testing.assert_allclose(molded[0, 0], image[0, 0] - config.MEAN_PIXEL, atol=1e-4)
    np.testing.assert_array_equal(U.unmold_image(molded, config), image)


def test_image_meta_roundtrip_numpy_and_graph():
    meta = U.compose_image_meta(7, (90, 60, 3), (128, 128, 3), (0, 21, 128, 107), 1.42, [1, 1])
    assert meta.shape == (1 + 3 + 3 + 4 + 1 + 2,)
    parsed = U.parse_image_meta(np.stack([meta, meta]))
    np.testing.assert_array_equal(parsed["image_id"], [7, 7])
    np.testing.assert_array_equal(parsed["window"][0], [0, 21, 128, 107])
    np.testing.assert_allclose(parsed["scale"], [1.42, 1.42], rtol=1e-6)
    np.testing.assert_array_equal(parsed["active_class_ids"][1], [1, 1])
    graph = U.parse_image_meta_graph(np.stack([meta, meta]).astype(np.float32))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(graph["original_image_shape"])[0], [90, 60, 3]
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(graph["scale"]), [1.42, 1.42], rtol=1e-6)


def test_a_whole_pixel_box_pastes_exactly_as_cv2_resizes():
    import cv2

    rng = np.random.default_rng(0)
    soft = rng.random((28, 28)).astype(np.float32)
    full = U.unmold_mask(soft, (5, 7, 45, 37), (60, 50))
    expected = np.zeros((60, 50), bool)
    expected[5:45, 7:37] = cv2.resize(soft, (30, 40), interpolation=cv2.INTER_LINEAR) >= 0.5
    np.testing.assert_array_equal(full, expected)


def test_a_fractional_box_covers_the_pixels_whose_centres_lie_inside_it():
    full = U.unmold_mask(np.ones((28, 28), np.float32), (10.6, 2.2, 20.4, 7.9), (30, 12))
    rows, cols = np.nonzero(full.any(axis=1))[0], np.nonzero(full.any(axis=0))[0]
    # Centres 11.5 .. 19.5 lie in [10.6, 20.4); 2.5 .. 7.5 in [2.2, 7.9). Rounding the box
    # to whole pixels first would have given rows 11 .. 19 -> 11 .. 20 (one row more).
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (11, 19, 2, 7)
    assert full.sum() == 9 * 6


def test_an_outline_follows_a_sub_pixel_shift_of_its_box():
    ramp = np.tile(np.linspace(1.0, 0.0, 28, dtype=np.float32)[None, :], (28, 1))
    # Over a 41 px box starting at dx the ramp crosses 0.5 at x = dx + 20.5: pixels with
    # centres up to there are kept. Rounding the box to whole pixels first would put the
    # crossing at 21.5 for dx = 0.6 (keeping pixel 21).
    last = [np.nonzero(U.unmold_mask(ramp, (0, dx, 20, 41 + dx), (20, 60))[0])[0][-1]
            for dx in (0.1, 0.6, 1.2)]
    assert last == [20, 20, 21]
