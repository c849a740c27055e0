"""Detection target layer: ROI sampling, class/box/mask targets, static padding."""

from __future__ import annotations

import keras
import numpy as np

from mrcnn import boxes
from mrcnn.targets import DetectionTargetLayer


def _layer(total=12, ratio=0.33, mini=True, batch=1):
    return DetectionTargetLayer(train_rois_per_image=total, roi_positive_ratio=ratio,
                                bbox_std_dev=(0.1, 0.1, 0.2, 0.2), mask_shape=(8, 8),
                                use_mini_mask=mini, batch_size=batch, seed=1)


def _run(layer, proposals, class_ids, gt_boxes, masks):
    out = layer(proposals, class_ids, gt_boxes, masks)
    return [keras.ops.convert_to_numpy(o) for o in out]


def _case():
    gt = np.array([[[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9], [0, 0, 0, 0]]], np.float32)
    class_ids = np.array([[2, 3, 0]], np.int32)
    proposals = np.zeros((1, 20, 4), np.float32)
    proposals[0, 0] = gt[0, 0]  # exact match: zero deltas
    proposals[0, 1] = [0.5, 0.5, 0.88, 0.9]  # IoU 0.95 with gt 1
    proposals[0, 2:12] = [[0.0, 0.6, 0.05, 0.65]] * 10  # negatives
    masks = np.ones((1, 4, 4, 3), bool)
    return proposals, class_ids, gt, masks


def test_positive_rois_get_gt_class_deltas_and_masks_then_negatives_then_padding():
    rois, class_ids, deltas, masks = _run(_layer(), *_case())
    assert rois.shape == (1, 12, 4) and masks.shape == (1, 12, 8, 8)
    # 2 positives, then floor(2 / 0.33) - 2 = 4 negatives, then 6 zero-padded rows.
    np.testing.assert_array_equal(sorted(class_ids[0, :2]), [2, 3])
    np.testing.assert_array_equal(class_ids[0, 2:], 0)
    assert np.all(np.abs(rois[0, :6]).sum(1) > 0) and np.all(rois[0, 6:] == 0)
    exact = int(np.where(class_ids[0] == 2)[0][0])
    np.testing.assert_allclose(deltas[0, exact], 0.0, atol=1e-5)
    other = int(np.where(class_ids[0] == 3)[0][0])
    expected = boxes.box_refinement(rois[0, other:other + 1], [[0.5, 0.5, 0.9, 0.9]])[0]
    np.testing.assert_allclose(deltas[0, other], expected / [0.1, 0.1, 0.2, 0.2], atol=1e-4)
    assert masks[0, :2].min() == 1.0 and masks[0, 2:].max() == 0.0
    np.testing.assert_array_equal(deltas[0, 2:], 0.0)


def test_without_positives_no_rois_are_sampled_as_matterport():
    proposals, class_ids, gt, masks = _case()
    proposals[0, :2] = 0.0
    rois, ids, deltas, _ = _run(_layer(), proposals, class_ids, gt, masks)
    assert np.all(rois == 0) and np.all(ids == 0)


def test_positives_are_capped_by_the_positive_ratio():
    proposals, class_ids, gt, masks = _case()
    proposals[0, :10] = gt[0, 0]  # 10 positives, cap int(12 * 0.33) = 3
    _, ids, _, _ = _run(_layer(), proposals, class_ids, gt, masks)
    assert int((ids[0] > 0).sum()) == 3


def test_crowd_boxes_are_never_positive_and_block_negatives():
    proposals, class_ids, gt, masks = _case()
    gt[0, 2] = [0.0, 0.6, 0.05, 0.65]  # crowd box over the negative proposals
    class_ids[0, 2] = -1
    rois, ids, _, _ = _run(_layer(), proposals, class_ids, gt, masks)
    valid = np.abs(rois[0]).sum(1) > 0
    assert int(valid.sum()) == 2  # only the two positives; the negatives touch the crowd
    assert set(ids[0][valid]) == {2, 3}


def test_full_size_masks_are_cropped_at_the_roi():
    proposals, class_ids, gt, _ = _case()
    full = np.zeros((1, 32, 32, 3), bool)
    full[0, :16, :, 0] = True  # top half of the image belongs to gt 0
    _, ids, _, masks = _run(_layer(mini=False), proposals, class_ids, gt, full)
    row = int(np.where(ids[0] == 2)[0][0])
    assert masks[0, row].min() == 1.0  # gt 0's box lies inside the top half


def test_gt_boxes_are_added_to_the_proposals_without_padding_or_crowd_rows():
    from mrcnn.targets import AddGtToProposals

    proposals = np.full((1, 3, 4), 0.2, np.float32)
    gt = np.array([[[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9], [0.2, 0.2, 0.3, 0.3]]],
                  np.float32)
    class_ids = np.array([[2, -1, 0]], np.int32)  # a box, a crowd box, padding
    out = keras.ops.convert_to_numpy(AddGtToProposals()(proposals, class_ids, gt))
    assert out.shape == (1, 6, 4)
    np.testing.assert_allclose(out[0, 0], gt[0, 0])
    np.testing.assert_array_equal(out[0, 1:3], 0.0)
    np.testing.assert_allclose(out[0, 3:], proposals[0])


def test_with_gt_added_junk_proposals_still_give_positive_rois():
    from mrcnn.targets import AddGtToProposals

    proposals, class_ids, gt, masks = _case()
    junk = np.zeros_like(proposals)
    junk[0, :10] = [[0.0, 0.6, 0.05, 0.65]] * 10  # no proposal overlaps a GT box
    with_gt = AddGtToProposals()(junk, class_ids, gt)
    rois, ids, deltas, _ = _run(_layer(), with_gt, class_ids, gt, masks)
    np.testing.assert_array_equal(sorted(ids[0, :2]), [2, 3])
    np.testing.assert_allclose(deltas[0, :2], 0.0, atol=1e-5)  # the GT boxes themselves
    np.testing.assert_array_equal(ids[0, 2:], 0)
