"""Inference detection layer and unmolding to the original image."""

from __future__ import annotations

import keras
import numpy as np

from mrcnn.detection import DetectionLayer, refine_detections, unmold_detections


def _refine(rois, probs, deltas, max_instances=4, min_confidence=0.5, nms=0.3, score="class"):
    out = refine_detections(rois, probs, deltas, np.array([0, 0, 1, 1], np.float32),
                            (0.1, 0.1, 0.2, 0.2), min_confidence, nms, max_instances, score)
    return keras.ops.convert_to_numpy(out)


def test_background_weak_and_duplicate_detections_are_dropped_and_padded():
    rois = np.array([[0.1, 0.1, 0.5, 0.5], [0.11, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9],
                     [0.2, 0.2, 0.3, 0.3], [0.5, 0.1, 0.9, 0.4]], np.float32)
    probs = np.array([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.1, 0.0, 0.9], [0.9, 0.1, 0.0],
                      [0.6, 0.4, 0.0]], np.float32)
    out = _refine(rois, probs, np.zeros((5, 3, 4), np.float32))
    assert out.shape == (4, 6 + 3)  # Matterport's 6 columns + the 3 class probabilities
    # ROI 1 is suppressed by ROI 0 (same class), ROI 3 is background, ROI 4 scores 0.4 < 0.5.
    np.testing.assert_allclose(out[:2, 5], [0.9, 0.9])
    np.testing.assert_array_equal(sorted(out[:2, 4]), [1, 2])
    np.testing.assert_array_equal(out[2:], 0.0)


def test_overlapping_boxes_of_different_classes_are_both_kept():
    rois = np.array([[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5]], np.float32)
    probs = np.array([[0.1, 0.9, 0.0], [0.2, 0.0, 0.8]], np.float32)
    out = _refine(rois, probs, np.zeros((2, 3, 4), np.float32))
    np.testing.assert_array_equal(out[:2, 4], [1, 2])


def test_foreground_scoring_keeps_an_object_whose_class_is_in_doubt():
    # P(background) 0.01, class 1 0.19, class 2 0.80: Matterport's score is 0.80 (dropped at
    # 0.9); foreground scoring keeps it at 0.99, names class 2 and keeps the probabilities.
    rois = np.array([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]], np.float32)
    probs = np.array([[0.01, 0.19, 0.80], [0.95, 0.04, 0.01]], np.float32)
    deltas = np.zeros((2, 3, 4), np.float32)
    assert not _refine(rois, probs, deltas, min_confidence=0.9).any()
    out = _refine(rois, probs, deltas, min_confidence=0.9, score="foreground")
    np.testing.assert_allclose(out[0, 4:], [2, 0.99, 0.01, 0.19, 0.80], atol=1e-6)
    np.testing.assert_array_equal(out[1:], 0.0)  # the background ROI stays out


def test_foreground_scoring_suppresses_across_classes():
    # One object, two ROIs that disagree on its class: one detection, the surer one.
    rois = np.array([[0.1, 0.1, 0.5, 0.5], [0.11, 0.1, 0.5, 0.5]], np.float32)
    probs = np.array([[0.05, 0.9, 0.05], [0.2, 0.0, 0.8]], np.float32)
    out = _refine(rois, probs, np.zeros((2, 3, 4), np.float32), score="foreground")
    np.testing.assert_allclose(out[0, 4:], [1, 0.95, 0.05, 0.9, 0.05], atol=1e-6)
    np.testing.assert_array_equal(out[1:], 0.0)


def test_class_specific_deltas_refine_and_the_window_clips():
    rois = np.array([[0.5, 0.5, 0.9, 0.9]], np.float32)
    probs = np.array([[0.0, 0.0, 1.0]], np.float32)
    deltas = np.zeros((1, 3, 4), np.float32)
    deltas[0, 2] = [1.0, 0.0, 0.0, 0.0]  # dy = 0.1 * 0.4 -> moves down by 0.04
    deltas[0, 1] = [9.0, 9.0, 9.0, 9.0]  # other class: ignored
    out = _refine(rois, probs, deltas)
    np.testing.assert_allclose(out[0, :4], [0.54, 0.5, 0.94, 0.9], atol=1e-5)
    out = refine_detections(rois, probs, deltas * 3, np.array([0, 0, 0.8, 1], np.float32),
                            (0.1, 0.1, 0.2, 0.2), 0.5, 0.3, 2)
    assert float(keras.ops.convert_to_numpy(out)[0, 2]) <= 0.8 + 1e-6


def test_detection_layer_reads_the_window_from_image_meta():
    layer = DetectionLayer((0.1, 0.1, 0.2, 0.2), 0.5, 0.3, 3, (11, 11), batch_size=1)
    meta = np.zeros((1, 14), np.float32)
    meta[0, 7:11] = [0, 0, 6, 11]  # rows 0..5 of an 11 px image: y2 <= 0.5
    rois = np.array([[[0.2, 0.2, 0.9, 0.9]]], np.float32)
    out = keras.ops.convert_to_numpy(layer(rois, np.array([[[0, 1.0]]], np.float32),
                                           np.zeros((1, 1, 2, 4), np.float32), meta))
    assert out.shape == (1, 3, 6 + 2)
    np.testing.assert_allclose(out[0, 0, :4], [0.2, 0.2, 0.5, 0.9], atol=1e-5)


def test_unmold_maps_boxes_and_masks_back_to_the_original_image():
    # A 64 px molded image holding a 32x64 original scaled by 1: window rows 16..48.
    window = np.array([16, 0, 48, 64])
    det = np.zeros((3, 6 + 3), np.float32)
    det[0] = [24 / 63, 8 / 63, 39 / 63, 31 / 63, 2, 0.9, 0.05, 0.05, 0.9]  # pixels (24, 8, 40, 32)
    mask = np.zeros((3, 14, 14, 3), np.float32)
    mask[0, :, :, 2] = 1.0
    rois, ids, scores, masks, probs = unmold_detections(
        det, mask, (32, 64, 3), (64, 64, 3), window)
    np.testing.assert_array_equal(rois, [[8, 8, 24, 32]])
    np.testing.assert_array_equal(ids, [2])
    np.testing.assert_allclose(scores, [0.9])
    np.testing.assert_allclose(probs, [[0.05, 0.05, 0.9]])
    assert masks.shape == (32, 64, 1) and masks.dtype == bool
    assert masks[8:24, 8:32, 0].all() and masks.sum() == 16 * 24


def test_unmold_maps_box_edges_by_the_resize_factor_of_an_upsampled_scan():
    # A 224 px scan shown at 384 (window 0..384): a box whose edges are 0 and 74 molded
    # pixels covers 74 * 224 / 384 = 43.17 original pixels, so rows 0-42 (centres < 43.17).
    # Denormalizing with the scan's own (H - 1) gave rows 0-43, a box 0.4 px too large.
    det = np.zeros((1, 6 + 2), np.float32)
    det[0] = [0, 0, 73 / 383, 73 / 383, 1, 0.99, 0.01, 0.99]
    mask = np.ones((1, 28, 28, 2), np.float32)
    rois, _, _, masks, _ = unmold_detections(
        det, mask, (224, 224, 3), (384, 384, 3), np.array([0, 0, 384, 384]))
    np.testing.assert_array_equal(rois, [[0, 0, 43, 43]])
    rows = np.nonzero(masks[:, :, 0].any(axis=1))[0]
    assert rows[-1] == 42 and masks.sum() == 43 * 43
