"""mrcnn.boxes: IoU, deltas, normalisation and anchors (numpy and keras.ops twins)."""

import keras
import numpy as np
import pytest

from mrcnn import boxes as B
from mrcnn.config import Config


def _random_boxes(rng: np.random.Generator, n: int, size: float = 100.0) -> np.ndarray:
    y1x1 = rng.uniform(0, size, (n, 2))
    hw = rng.uniform(1, size / 2, (n, 2))
    return np.concatenate([y1x1, y1x1 + hw], axis=1).astype(np.float32)


def test_compute_iou_of_half_overlapping_boxes_is_one_third():
    box = np.array([0, 0, 10, 10])
    boxes = np.array([[0, 5, 10, 15], [20, 20, 30, 30]])
    iou = B.compute_iou(box, boxes, 100.0, np.array([100.0, 100.0]))
    np.testing.assert_allclose(iou, [1 / 3, 0.0])


def test_compute_overlaps_matches_compute_iou_per_column():
    rng = np.random.default_rng(0)
    b1, b2 = _random_boxes(rng, 7), _random_boxes(rng, 5)
    overlaps = B.compute_overlaps(b1, b2)
    assert overlaps.shape == (7, 5)
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    for j in range(5):
        area2 = (b2[j, 2] - b2[j, 0]) * (b2[j, 3] - b2[j, 1])
        np.testing.assert_allclose(overlaps[:, j], B.compute_iou(b2[j], b1, area2, area1), 1e-6)


def test_compute_overlaps_of_zero_padding_is_zero_not_nan():
    overlaps = B.compute_overlaps(np.zeros((2, 4)), np.array([[0, 0, 5, 5]]))
    np.testing.assert_array_equal(overlaps, 0.0)


def test_compute_overlaps_masks_counts_pixels():
    m1 = np.zeros((4, 4, 1), bool)
    m1[:2, :, 0] = True  # 8 pixels
    m2 = np.zeros((4, 4, 2), bool)
    m2[:, :2, 0] = True  # 8 pixels, 4 shared
    overlaps = B.compute_overlaps_masks(m1, m2)
    np.testing.assert_allclose(overlaps, [[4 / 12, 0.0]])
    assert B.compute_overlaps_masks(m1, np.zeros((4, 4, 0))).shape == (1, 0)


def test_box_refinement_then_apply_deltas_recovers_gt():
    rng = np.random.default_rng(1)
    box, gt = _random_boxes(rng, 20), _random_boxes(rng, 20)
    deltas = B.box_refinement(box, gt)
    np.testing.assert_allclose(B.apply_box_deltas_np(box, deltas), gt, atol=1e-3)


def test_box_refinement_hand_computed():
    deltas = B.box_refinement(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 20]]))
    np.testing.assert_allclose(deltas, [[0.5, 0.5, 0.0, np.log(2)]], atol=1e-6)


def test_norm_boxes_follow_matterport_convention_and_invert():
    boxes = np.array([[0, 0, 100, 200], [10, 20, 30, 40]])
    normed = B.norm_boxes(boxes, (100, 200))
    np.testing.assert_allclose(normed[0], [0, 0, 1, 1])
    np.testing.assert_allclose(normed[1], [10 / 99, 20 / 199, 29 / 99, 39 / 199], rtol=1e-6)
    np.testing.assert_array_equal(B.denorm_boxes(normed, (100, 200)), boxes)


def test_generate_anchors_centres_and_sizes():
    anchors = B.generate_anchors([32], [0.5, 1, 2], (2, 3), feature_stride=4, anchor_stride=1)
    assert anchors.shape == (2 * 3 * 3, 4)
    # First position (0, 0), ratio 0.5 (w/h): h = 32/sqrt(.5), w = 32*sqrt(.5)
    h, w = 32 / np.sqrt(0.5), 32 * np.sqrt(0.5)
    np.testing.assert_allclose(anchors[0], [-h / 2, -w / 2, h / 2, w / 2])
    # Second position is one stride to the right (x = 4), same three sizes.
    np.testing.assert_allclose(anchors[3], anchors[0] + [0, 4, 0, 4])
    # Position (1, 0) is the 4th position: one stride down.
    np.testing.assert_allclose(anchors[9], anchors[0] + [4, 0, 4, 0])


def test_compute_backbone_shapes_rounds_up():
    config = Config(BACKBONE="resnet50")
    shapes = B.compute_backbone_shapes(config, (100, 130, 3))
    np.testing.assert_array_equal(shapes, [[25, 33], [13, 17], [7, 9], [4, 5], [2, 3]])


def test_get_anchors_counts_normalises_and_caches():
    config = Config(IMAGE_MAX_DIM=256, IMAGE_MIN_DIM=256)
    anchors = B.get_anchors(config, (256, 256, 3))
    expected = 3 * sum((256 // s) ** 2 for s in config.BACKBONE_STRIDES)
    assert anchors.shape == (expected, 4) and anchors.dtype == np.float32
    assert B.get_anchors(config, (256, 256, 3)) is anchors
    assert not anchors.flags.writeable
    other = B.get_anchors(config.replace(RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128)), (256, 256, 3))
    assert other is not anchors and not np.allclose(other, anchors)
    pixels = B.generate_pyramid_anchors(
        config.RPN_ANCHOR_SCALES,
        config.RPN_ANCHOR_RATIOS,
        B.compute_backbone_shapes(config, (256, 256)),
        config.BACKBONE_STRIDES,
        1,
    )
    np.testing.assert_allclose(anchors, B.norm_boxes(pixels, (256, 256)), rtol=1e-6)


# ------------------------------------------------------------------- keras.ops twins


def test_apply_box_deltas_graph_matches_numpy():
    rng = np.random.default_rng(2)
    boxes = _random_boxes(rng, 10)
    deltas = rng.normal(0, 0.3, (10, 4)).astype(np.float32)
    got = keras.ops.convert_to_numpy(B.apply_box_deltas_graph(boxes, deltas))
    np.testing.assert_allclose(got, B.apply_box_deltas_np(boxes, deltas), rtol=1e-5, atol=1e-4)


def test_box_refinement_graph_matches_numpy():
    rng = np.random.default_rng(3)
    box, gt = _random_boxes(rng, 10), _random_boxes(rng, 10)
    got = keras.ops.convert_to_numpy(B.box_refinement_graph(box, gt))
    np.testing.assert_allclose(got, B.box_refinement(box, gt), rtol=1e-5, atol=1e-5)


def test_overlaps_graph_matches_numpy():
    rng = np.random.default_rng(4)
    b1, b2 = _random_boxes(rng, 6), _random_boxes(rng, 9)
    b1[0] = 0  # a zero-padded row gives 0, not nan
    got = keras.ops.convert_to_numpy(B.overlaps_graph(b1, b2))
    np.testing.assert_allclose(got, B.compute_overlaps(b1, b2), atol=1e-6)


def test_clip_boxes_graph_clips_to_window():
    boxes = np.array([[-0.2, 0.1, 0.5, 1.3], [0.3, 0.3, 0.4, 0.4]], np.float32)
    got = keras.ops.convert_to_numpy(B.clip_boxes_graph(boxes, np.array([0, 0, 1, 1.0])))
    np.testing.assert_allclose(got, [[0, 0.1, 0.5, 1.0], [0.3, 0.3, 0.4, 0.4]])


@pytest.mark.parametrize("shape", [(100, 200), np.array([100, 200])])
def test_norm_denorm_graph_match_numpy(shape):
    boxes = np.array([[0, 0, 100, 200], [10, 20, 30, 40]], np.float32)
    normed = keras.ops.convert_to_numpy(B.norm_boxes_graph(boxes, shape))
    np.testing.assert_allclose(normed, B.norm_boxes(boxes, (100, 200)), rtol=1e-6)
    back = keras.ops.convert_to_numpy(B.denorm_boxes_graph(normed, shape))
    np.testing.assert_array_equal(back, boxes.astype(np.int32))
