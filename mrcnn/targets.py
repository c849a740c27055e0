"""Detection targets: sample ROIs against the ground truth for the heads' training.

Matterport's DetectionTargetLayer with static shapes: random subsets are drawn with top_k
over random keys instead of tf.random_shuffle of a dynamically sized set, and the result is
compacted (positives first, then negatives, then zero padding) with an argsort.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

from mrcnn import boxes as box_utils
from mrcnn import ops as mops


class DetectionTargetLayer(layers.Layer):
    """Subsample proposals and build class, box-delta and mask targets for each.

    Inputs:
      proposals: [B, N, (y1, x1, y2, x2)] normalized, zero-padded.
      gt_class_ids: [B, G] int (0 = padding, < 0 = crowd box).
      gt_boxes: [B, G, (y1, x1, y2, x2)] normalized.
      gt_masks: [B, mh, mw, G] (mini masks when use_mini_mask, else full-image masks).
    Outputs:
      rois: [B, T, 4] normalized; target_class_ids: [B, T] int32;
      target_deltas: [B, T, (dy, dx, log dh, log dw)] divided by bbox_std_dev;
      target_masks: [B, T, mask_h, mask_w] in {0, 1}. T = train_rois_per_image.
    Zero-padded entries have class 0, zero deltas and empty masks.
    """

    def __init__(
        self,
        train_rois_per_image: int,
        roi_positive_ratio: float,
        bbox_std_dev: tuple[float, ...],
        mask_shape: tuple[int, int],
        use_mini_mask: bool,
        batch_size: int,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.train_rois_per_image = int(train_rois_per_image)
        self.roi_positive_ratio = float(roi_positive_ratio)
        self.bbox_std_dev = tuple(float(v) for v in np.ravel(bbox_std_dev))
        self.mask_shape = tuple(int(v) for v in mask_shape)
        self.use_mini_mask = bool(use_mini_mask)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, proposals: Any, gt_class_ids: Any, gt_boxes: Any, gt_masks: Any) -> Any:
        proposals = ops.cast(proposals, "float32")
        gt_boxes = ops.cast(gt_boxes, "float32")
        gt_class_ids = ops.cast(gt_class_ids, "int32")
        num_gt = gt_boxes.shape[1]
        keys = keras.random.uniform(
            (self.batch_size, proposals.shape[1]), seed=self.seed_generator
        )  # [B, N] random sampling priorities
        per_image = [
            self._sample(proposals[b], gt_class_ids[b], gt_boxes[b], keys[b])
            for b in range(self.batch_size)
        ]
        rois, class_ids, deltas, assignment, positive = (
            ops.stack([p[i] for p in per_image], axis=0) for i in range(5)
        )
        masks = self._mask_targets(rois, gt_boxes, gt_masks, assignment, positive, num_gt)
        outputs = [rois, class_ids, deltas, masks]
        return [ops.stop_gradient(t) for t in outputs]

    def _sample(self, proposals: Any, gt_class_ids: Any, gt_boxes: Any, keys: Any) -> tuple:
        """One image. proposals [N, 4], gt_class_ids [G], gt_boxes [G, 4], keys [N] in [0, 1).

        Returns rois [T, 4], class_ids [T], deltas [T, 4], gt assignment [T], positive [T].
        """
        total = self.train_rois_per_image
        num_props = proposals.shape[0]
        valid_prop = ops.sum(ops.abs(proposals), axis=1) > 0  # [N]
        valid_gt = ops.sum(ops.abs(gt_boxes), axis=1) > 0  # [G]
        crowd = ops.logical_and(valid_gt, gt_class_ids < 0)
        non_crowd = ops.logical_and(valid_gt, gt_class_ids > 0)

        overlaps = box_utils.overlaps_graph(proposals, gt_boxes)  # [N, G]
        # Crowd boxes: ROIs that touch them are never used as negatives.
        crowd_iou_max = ops.max(ops.where(crowd[None, :], overlaps, 0.0), axis=1)
        no_crowd = crowd_iou_max < 0.001
        gt_overlaps = ops.where(non_crowd[None, :], overlaps, -1.0)  # [N, G]
        roi_iou_max = ops.max(gt_overlaps, axis=1)  # [N]
        positive = ops.logical_and(roi_iou_max >= 0.5, valid_prop)
        negative = ops.logical_and(ops.logical_and(roi_iou_max < 0.5, no_crowd), valid_prop)

        # Positives: a random subset of at most ratio * T.
        max_pos = min(int(total * self.roi_positive_ratio), num_props)
        pos_vals, pos_idx = ops.top_k(ops.where(positive, keys, -1.0), max_pos)
        pos_valid = pos_vals >= 0
        pos_count = ops.sum(ops.cast(pos_valid, "int32"))
        # Negatives: enough to keep the positive ratio (Matterport: 0 when there is no positive).
        neg_count = ops.cast(
            ops.floor(ops.cast(pos_count, "float32") / self.roi_positive_ratio), "int32"
        ) - pos_count
        neg_count = ops.minimum(neg_count, total - pos_count)
        k_neg = min(total, num_props)
        neg_vals, neg_idx = ops.top_k(ops.where(negative, keys, -1.0), k_neg)
        neg_valid = ops.logical_and(neg_vals >= 0, ops.arange(k_neg) < neg_count)

        # Compact: valid positives, then valid negatives, then padding; keep T entries.
        idx = ops.concatenate([pos_idx, neg_idx])
        valid = ops.concatenate([pos_valid, neg_valid])
        is_pos = ops.concatenate([pos_valid, ops.zeros_like(neg_valid)])
        slots = max_pos + k_neg
        order_key = ops.where(valid, ops.arange(slots), slots + ops.arange(slots))
        order = ops.argsort(order_key)[:total]
        if slots < total:
            order = ops.pad(order, [[0, total - slots]], constant_values=slots)
            idx = ops.pad(idx, [[0, 1]])
            valid = ops.pad(valid, [[0, 1]])
            is_pos = ops.pad(is_pos, [[0, 1]])
        roi_idx = ops.take(idx, order)
        roi_valid = ops.cast(ops.take(valid, order), "float32")  # [T]
        roi_pos = ops.take(is_pos, order)  # [T] bool
        rois = ops.take(proposals, roi_idx, axis=0) * roi_valid[:, None]  # [T, 4]

        # Each positive ROI's GT: the non-crowd box it overlaps most.
        assignment = ops.cast(ops.argmax(ops.take(gt_overlaps, roi_idx, axis=0), axis=1), "int32")
        pos_f = ops.cast(roi_pos, "float32")
        class_ids = ops.take(gt_class_ids, assignment) * ops.cast(roi_pos, "int32")
        roi_gt_boxes = ops.take(gt_boxes, assignment, axis=0)
        unit = ops.convert_to_tensor(np.array([0.0, 0.0, 1.0, 1.0], np.float32))
        safe_rois = ops.where(roi_pos[:, None], rois, unit)  # avoid log(0) on padding
        safe_gt = ops.where(roi_pos[:, None], roi_gt_boxes, unit)
        deltas = box_utils.box_refinement_graph(safe_rois, safe_gt)
        deltas = deltas / ops.convert_to_tensor(np.array(self.bbox_std_dev, np.float32))
        deltas = deltas * pos_f[:, None]
        return rois, class_ids, deltas, assignment, roi_pos

    def _mask_targets(self, rois: Any, gt_boxes: Any, gt_masks: Any, assignment: Any,
                      positive: Any, num_gt: int) -> Any:
        """Crop each positive ROI's GT mask to mask_shape. Returns [B, T, mh, mw] in {0, 1}.

        rois [B, T, 4], gt_boxes [B, G, 4], gt_masks [B, mh, mw, G], assignment/positive [B, T].
        """
        total = self.train_rois_per_image
        masks = ops.cast(gt_masks, "float32")
        mh, mw = masks.shape[1], masks.shape[2]
        masks = ops.reshape(ops.transpose(masks, (0, 3, 1, 2)), (-1, mh, mw, 1))  # [B*G, mh, mw, 1]
        boxes = ops.reshape(rois, (-1, 4))  # [B*T, 4]
        if self.use_mini_mask:
            # Mini masks cover only their GT box: express the ROI in that box's frame.
            gt = ops.reshape(
                ops.take_along_axis(gt_boxes, ops.expand_dims(assignment, -1), axis=1), (-1, 4)
            )  # [B*T, 4]
            gh = ops.maximum(gt[:, 2] - gt[:, 0], 1e-6)
            gw = ops.maximum(gt[:, 3] - gt[:, 1], 1e-6)
            boxes = ops.stack(
                [(boxes[:, 0] - gt[:, 0]) / gh, (boxes[:, 1] - gt[:, 1]) / gw,
                 (boxes[:, 2] - gt[:, 0]) / gh, (boxes[:, 3] - gt[:, 1]) / gw], axis=1
            )
        offsets = ops.arange(self.batch_size, dtype="int32")[:, None] * num_gt  # [B, 1]
        box_ids = ops.reshape(assignment + offsets, (-1,))  # [B*T]
        crops = mops.crop_and_resize(masks, boxes, box_ids, self.mask_shape)  # [B*T, h, w, 1]
        crops = ops.reshape(crops, (-1, total, *self.mask_shape))
        # Threshold at 0.5 so the targets are binary (as Matterport's tf.round).
        crops = ops.cast(crops >= 0.5, "float32")
        return crops * ops.cast(positive, "float32")[:, :, None, None]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            train_rois_per_image=self.train_rois_per_image,
            roi_positive_ratio=self.roi_positive_ratio, bbox_std_dev=self.bbox_std_dev,
            mask_shape=self.mask_shape, use_mini_mask=self.use_mini_mask,
            batch_size=self.batch_size, seed=self.seed,
        )
        return config


class AddGtToProposals(layers.Layer):
    """Append the ground-truth boxes to the RPN proposals (Detectron/torchvision; not Matterport).

    Early in training the RPN proposals are poor, so few of them overlap a GT box and the heads
    get few positive ROIs; the GT boxes themselves are perfect positives. Shapes stay static.
    Inputs: proposals [B, N, 4] normalized, zero-padded; gt_class_ids [B, G] int;
    gt_boxes [B, G, 4] normalized. Output: [B, G + N, 4]; the rows of padding and crowd GT
    boxes (class id <= 0) are zero, which DetectionTargetLayer treats as padding.
    """

    def call(self, proposals: Any, gt_class_ids: Any, gt_boxes: Any) -> Any:
        keep = ops.cast(ops.cast(gt_class_ids, "int32") > 0, "float32")[:, :, None]  # [B, G, 1]
        gt = ops.cast(gt_boxes, "float32") * keep
        return ops.stop_gradient(ops.concatenate([gt, ops.cast(proposals, "float32")], axis=1))

    def compute_output_shape(self, proposals_shape: Any, gt_class_ids_shape: Any,
                             gt_boxes_shape: Any) -> tuple:
        n, g = proposals_shape[1], gt_boxes_shape[1]
        return (proposals_shape[0], None if n is None or g is None else n + g, 4)
