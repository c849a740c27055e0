"""The five losses against direct numpy computations."""

from __future__ import annotations

import keras
import numpy as np

from mrcnn import losses


def _np(x):
    return float(keras.ops.convert_to_numpy(x))


def _softmax_ce(logits, labels):
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, labels[..., None], -1)[..., 0]


def test_rpn_class_loss_averages_over_non_neutral_anchors():
    rng = np.random.default_rng(0)
    match = np.array([[[1], [-1], [0], [1]]], np.int32)
    logits = rng.normal(size=(1, 4, 2)).astype(np.float32)
    ce = _softmax_ce(logits[0], np.array([1, 0, 0, 1]))
    expected = ce[[0, 1, 3]].mean()
    np.testing.assert_allclose(_np(losses.rpn_class_loss(match, logits)), expected, rtol=1e-5)


def test_rpn_bbox_loss_matches_positive_anchors_in_order():
    match = np.array([[[0], [1], [-1], [1]]], np.int32)
    pred = np.array([[[9, 9, 9, 9], [0.5, 0, 0, 0], [9, 9, 9, 9], [0, 3, 0, 0]]], np.float32)
    target = np.zeros((1, 3, 4), np.float32)  # two positives then padding
    # smooth L1: 0.125 for 0.5, 2.5 for 3; mean over 2 anchors x 4 coordinates
    np.testing.assert_allclose(_np(losses.rpn_bbox_loss(target, match, pred)),
                               (0.125 + 2.5) / 8, rtol=1e-5)


def test_mrcnn_class_loss_ignores_predictions_of_inactive_classes():
    logits = np.array([[[5.0, 0, 0], [0, 0, 5.0]]], np.float32)  # predicts 0, then 2
    target = np.array([[1, 1]], np.int32)
    active = np.array([[1, 1, 0]], np.float32)  # class 2 inactive: second ROI ignored
    expected = _softmax_ce(logits[0, :1], np.array([1]))[0]
    np.testing.assert_allclose(_np(losses.mrcnn_class_loss(target, logits, active)),
                               expected, rtol=1e-5)


def test_mrcnn_bbox_loss_uses_the_gt_class_deltas_of_positives():
    pred = np.zeros((1, 2, 3, 4), np.float32)
    pred[0, 0, 2] = [1.0, 0, 0, 0]  # class-2 deltas of the positive ROI
    pred[0, 1, :] = 100.0  # background ROI: ignored
    target = np.zeros((1, 2, 4), np.float32)
    ids = np.array([[2, 0]], np.int32)
    np.testing.assert_allclose(_np(losses.mrcnn_bbox_loss(target, ids, pred)), 0.5 / 4,
                               rtol=1e-5)


def test_mrcnn_mask_loss_is_bce_on_the_gt_class_channel():
    pred = np.full((1, 2, 2, 2, 3), 0.5, np.float32)
    pred[0, 0, :, :, 1] = 0.9
    target = np.ones((1, 2, 2, 2), np.float32)
    ids = np.array([[1, 0]], np.int32)
    np.testing.assert_allclose(_np(losses.mrcnn_mask_loss(target, ids, pred)), -np.log(0.9),
                               rtol=1e-5)


def test_empty_selections_give_zero_loss():
    zeros = np.zeros((1, 2), np.int32)
    assert _np(losses.mrcnn_bbox_loss(np.zeros((1, 2, 4)), zeros, np.ones((1, 2, 3, 4)))) == 0
    assert _np(losses.rpn_class_loss(np.zeros((1, 5, 1), np.int32), np.ones((1, 5, 2)))) == 0
