"""mrcnn.metrics: matching and AP with hand-computed values (Matterport semantics)."""

import math

import numpy as np
import pytest

from mrcnn import metrics as M

H = W = 32


def _square(y, x, size=8):
    mask = np.zeros((H, W), bool)
    mask[y : y + size, x : x + size] = True
    return mask, [y, x, y + size, x + size]


def _instances(*squares):
    """Masks [H, W, N] and boxes [N, 4] of squares given as (y, x)."""
    pairs = [_square(y, x) for y, x in squares]
    return np.stack([m for m, _ in pairs], -1), np.array([b for _, b in pairs], np.float32)


GT_MASKS, GT_BOXES = _instances((0, 0), (16, 16))
GT_IDS = np.array([1, 1])


def _ap(pred_squares, scores, class_ids=None, threshold=0.5):
    masks, boxes = _instances(*pred_squares)
    class_ids = np.ones(len(pred_squares), int) if class_ids is None else np.array(class_ids)
    return M.compute_ap(
        GT_BOXES, GT_IDS, GT_MASKS, boxes, class_ids, np.array(scores), masks, threshold
    )


def test_perfect_predictions_give_ap_one():
    ap, precisions, recalls, overlaps = _ap([(16, 16), (0, 0)], [0.6, 0.9])
    assert ap == pytest.approx(1.0)
    np.testing.assert_allclose(recalls, [0, 0.5, 1, 1])
    np.testing.assert_allclose(np.diag(overlaps), [1, 1])  # sorted by score: (0,0) first


def test_one_of_two_gt_missed_gives_half():
    ap, precisions, recalls, _ = _ap([(0, 0)], [0.9])
    assert ap == pytest.approx(0.5)
    np.testing.assert_allclose(precisions, [1, 1, 0])
    np.testing.assert_allclose(recalls, [0, 0.5, 1])


def test_false_positive_ranked_first_gives_two_thirds():
    # precision 0, 1/2, 2/3 at recall 0, 1/2, 1 -> envelope 2/3 over the whole recall range
    ap, precisions, _, _ = _ap([(0, 24), (0, 0), (16, 16)], [0.9, 0.8, 0.7])
    assert ap == pytest.approx(2 / 3)
    np.testing.assert_allclose(precisions, [2 / 3, 2 / 3, 2 / 3, 2 / 3, 0])


def test_wrong_class_does_not_match():
    # The class-2 prediction is a false positive ranked first: precision 0, 1/2 at recall
    # 0, 1/2, then nothing -> AP = 1/2 * 1/2.
    ap, *_ = _ap([(0, 0), (16, 16)], [0.9, 0.8], class_ids=[2, 1])
    assert ap == pytest.approx(0.25)


def test_each_gt_matches_once_and_padding_is_trimmed():
    masks, boxes = _instances((0, 0), (0, 0))
    gt_boxes = np.concatenate([GT_BOXES, np.zeros((3, 4), np.float32)])
    gt_masks = np.concatenate([GT_MASKS, np.zeros((H, W, 3), bool)], -1)
    gt_match, pred_match, overlaps = M.compute_matches(
        gt_boxes, np.array([1, 1, 0, 0, 0]), gt_masks, boxes, np.array([1, 1]),
        np.array([0.5, 0.7]), masks,
    )  # fmt: skip
    np.testing.assert_array_equal(gt_match, [0, -1])
    np.testing.assert_array_equal(pred_match, [0, -1])
    assert overlaps.shape == (2, 2)


def test_ap_range_counts_thresholds_the_iou_passes():
    # A prediction covering 46 of the 64 GT pixels: IoU 0.71875 passes 0.50 ... 0.70 (5/10).
    pred = GT_MASKS[..., :1].copy()
    pred[5:8, 2:8, 0] = False
    pred_box = np.array([[0, 0, 8, 8]], np.float32)
    ap = M.compute_ap_range(
        GT_BOXES[:1], GT_IDS[:1], GT_MASKS[..., :1], pred_box, np.array([1]), np.array([0.9]),
        pred, verbose=0,
    )  # fmt: skip
    assert ap == pytest.approx(0.5)


def test_ap_without_ground_truth_is_nan():
    masks, boxes = _instances((0, 0))
    ap, *_ = M.compute_ap(
        np.zeros((0, 4)), np.zeros(0), np.zeros((H, W, 0), bool), boxes, np.array([1]),
        np.array([0.9]), masks,
    )  # fmt: skip
    assert math.isnan(ap)


def test_compute_recall_counts_distinct_gt():
    pred = np.array([[0, 0, 8, 8], [0, 0, 8, 7], [40, 40, 50, 50]], np.float32)
    recall, positive_ids = M.compute_recall(pred, GT_BOXES, 0.5)
    assert recall == pytest.approx(0.5)
    np.testing.assert_array_equal(positive_ids, [0, 1])
    assert M.compute_recall(np.zeros((0, 4)), GT_BOXES, 0.5)[0] == 0.0
