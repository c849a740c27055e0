"""Pyramid ROIAlign: level assignment and per-level cropping in input order."""

from __future__ import annotations

import keras
import numpy as np

from mrcnn.roi_align import PyramidROIAlign, roi_levels


def test_roi_levels_follow_the_fpn_formula():
    # 1024 px image: a 224 px box goes to level 4, 112 px to 3, 56 px to 2, 448+ px to 5.
    size = 1023.0
    sides = np.array([224, 112, 56, 10, 448, 1000]) / size
    boxes = np.stack([np.zeros(6), np.zeros(6), sides, sides], -1).astype(np.float32)
    levels = keras.ops.convert_to_numpy(roi_levels(boxes, 1024 * 1024))
    np.testing.assert_array_equal(levels, [4, 3, 2, 2, 5, 5])


def test_zero_boxes_go_to_level_2_without_nan():
    levels = keras.ops.convert_to_numpy(roi_levels(np.zeros((3, 4), np.float32), 64 * 64))
    np.testing.assert_array_equal(levels, [2, 2, 2])


def test_each_box_is_cropped_from_its_level_in_input_order():
    # Feature map of level L is filled with the value L, so each crop reveals its level.
    maps = [np.full((2, s, s, 3), float(level), np.float32)
            for level, s in zip((2, 3, 4, 5), (64, 32, 16, 8), strict=True)]
    image_side = 256  # level k for a box of 224 / 256 * 2^(k-4) of the image side
    sides = [0.1, 0.85, 0.3, 0.5]  # 26 px -> 2, 218 px -> 4, 77 px -> 2 (2.46), 128 px -> 3
    boxes = np.array([[[0, 0, s, s] for s in sides], [[0.2, 0.2, 0.2 + s, 0.2 + s]
                                                      for s in reversed(sides)]], np.float32)
    layer = PyramidROIAlign((7, 7), (image_side, image_side))
    out = keras.ops.convert_to_numpy(layer(boxes, maps))
    assert out.shape == (8, 7, 7, 3)
    np.testing.assert_allclose(out[:, 3, 3, 0], [2, 4, 2, 3, 3, 2, 4, 2])


def test_pyramid_crop_fast_path_equals_the_reference_on_random_boxes():
    from mrcnn import ops as mops

    rng = np.random.default_rng(0)
    maps = [rng.random((2, s, s, 4), dtype=np.float32) for s in (32, 16, 8, 4)]
    corners = rng.random((40, 2, 2), dtype=np.float32) * 1.2 - 0.1  # some outside the image
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    indices = rng.integers(0, 2, 40).astype(np.int32)
    levels = rng.integers(0, 4, 40).astype(np.int32)
    fast = mops.pyramid_crop_and_resize(maps, boxes, indices, levels, (5, 5))
    ref = mops.pyramid_crop_and_resize_reference(maps, boxes, indices, levels, (5, 5))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fast),
                               keras.ops.convert_to_numpy(ref), atol=1e-6)
