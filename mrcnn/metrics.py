"""Detection metrics with Matterport's semantics: mask-IoU matching, AP, AP over IoU ranges, recall.

Inputs are one image's ground truth and predictions: boxes [N, (y1, x1, y2, x2)] (zero rows
are padding and are trimmed), class ids [N], scores [N], masks [H, W, N].
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from mrcnn.boxes import compute_overlaps, compute_overlaps_masks

logger = logging.getLogger(__name__)


def trim_zeros(x: np.ndarray) -> np.ndarray:
    """Drop all-zero rows (padding) of a 2-D array [N, C]."""
    assert x.ndim == 2
    return x[~np.all(x == 0, axis=1)]


def compute_matches(
    gt_boxes: np.ndarray,
    gt_class_ids: np.ndarray,
    gt_masks: np.ndarray,
    pred_boxes: np.ndarray,
    pred_class_ids: np.ndarray,
    pred_scores: np.ndarray,
    pred_masks: np.ndarray,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedily match predictions (by descending score) to ground truth on mask IoU.

    A prediction takes the unmatched GT of its class with the highest IoU >= iou_threshold
    (candidates with IoU < score_threshold are ignored, as in Matterport).
    Returns gt_match [N_gt] (index of the matched sorted prediction or -1), pred_match
    [N_pred] (index of the matched GT or -1, in descending score order) and the mask
    overlaps [N_pred, N_gt] of the sorted predictions.
    """
    gt_boxes = trim_zeros(np.asarray(gt_boxes))
    gt_masks = gt_masks[..., : gt_boxes.shape[0]]
    pred_boxes = trim_zeros(np.asarray(pred_boxes))
    pred_scores = np.asarray(pred_scores)[: pred_boxes.shape[0]]
    order = np.argsort(pred_scores)[::-1]
    pred_class_ids = np.asarray(pred_class_ids)[order]
    pred_masks = pred_masks[..., order]

    overlaps = compute_overlaps_masks(pred_masks, gt_masks)  # [N_pred, N_gt]
    pred_match = -1 * np.ones([len(order)])
    gt_match = -1 * np.ones([gt_boxes.shape[0]])
    for i in range(len(order)):
        candidates = np.argsort(overlaps[i])[::-1]  # GT by descending IoU
        candidates = candidates[overlaps[i, candidates] >= score_threshold]
        for j in candidates:
            if gt_match[j] > -1:
                continue
            if overlaps[i, j] < iou_threshold:
                break
            if pred_class_ids[i] == gt_class_ids[j]:
                gt_match[j] = i
                pred_match[i] = j
                break
    return gt_match, pred_match, overlaps


def compute_ap(
    gt_boxes: np.ndarray,
    gt_class_ids: np.ndarray,
    gt_masks: np.ndarray,
    pred_boxes: np.ndarray,
    pred_class_ids: np.ndarray,
    pred_scores: np.ndarray,
    pred_masks: np.ndarray,
    iou_threshold: float = 0.5,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Average precision at one IoU threshold (VOC style, all recall change points).

    Precision is made monotone (its running maximum from the right) and AP is the area
    under that envelope, summed where recall changes. Returns (AP, precisions [N_pred + 2],
    recalls [N_pred + 2], overlaps [N_pred, N_gt]). AP is nan without ground truth.
    """
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks,
        iou_threshold,
    )  # fmt: skip
    true_positives = np.cumsum(pred_match > -1)
    precisions = true_positives / (np.arange(len(pred_match)) + 1)
    num_gt = len(gt_match)
    recalls = true_positives / max(num_gt, 1)

    precisions = np.concatenate([[0], precisions, [0]])
    recalls = np.concatenate([[0], recalls, [1]])
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]  # precision envelope
    changes = np.where(recalls[:-1] != recalls[1:])[0] + 1
    ap = float(np.sum((recalls[changes] - recalls[changes - 1]) * precisions[changes]))
    if not num_gt:
        ap = float("nan")  # recall is undefined without ground truth
    return ap, precisions, recalls, overlaps


def compute_ap_range(
    gt_box: np.ndarray,
    gt_class_id: np.ndarray,
    gt_mask: np.ndarray,
    pred_box: np.ndarray,
    pred_class_id: np.ndarray,
    pred_score: np.ndarray,
    pred_mask: np.ndarray,
    iou_thresholds: Sequence[float] | None = None,
    verbose: int = 1,
) -> float:
    """Mean AP over IoU thresholds (default 0.5:0.05:0.95, COCO's range)."""
    if iou_thresholds is None:
        iou_thresholds = np.arange(0.5, 1.0, 0.05)
    aps = []
    for threshold in iou_thresholds:
        ap = compute_ap(
            gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score, pred_mask,
            iou_threshold=threshold,
        )[0]  # fmt: skip
        if verbose:
            logger.info("AP @%.2f:\t %.3f", threshold, ap)
        aps.append(ap)
    mean_ap = float(np.mean(aps))
    if verbose:
        logger.info("AP @%.2f-%.2f:\t %.3f", iou_thresholds[0], iou_thresholds[-1], mean_ap)
    return mean_ap


def compute_recall(
    pred_boxes: np.ndarray, gt_boxes: np.ndarray, iou: float
) -> tuple[float, np.ndarray]:
    """Box recall: fraction of GT boxes that some prediction overlaps with IoU >= iou.

    Returns (recall, indices of the predictions that reach iou with some GT box).
    """
    gt_boxes = np.asarray(gt_boxes)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return 0.0, np.zeros([0], dtype=np.int64)
    overlaps = compute_overlaps(pred_boxes, gt_boxes)  # [N_pred, N_gt]
    iou_max = overlaps.max(axis=1)
    iou_argmax = overlaps.argmax(axis=1)
    positive_ids = np.where(iou_max >= iou)[0]
    matched_gt = set(iou_argmax[positive_ids].tolist())
    return len(matched_gt) / gt_boxes.shape[0], positive_ids
