"""The five Mask R-CNN losses (Matterport semantics), written with static shapes.

Where Matterport gathers the entries that count (tf.where) and averages them, these
functions weight every entry with a 0/1 mask and divide by the mask's sum, which is the
same number without dynamic shapes. An empty selection gives a loss of 0.
"""

from __future__ import annotations

from typing import Any

from keras import ops


def _masked_mean(values: Any, mask: Any) -> Any:
    """sum(values * mask) / sum(mask), 0 when the mask is empty. Shapes broadcast."""
    mask = ops.cast(mask, "float32")
    values = ops.cast(values, "float32") * mask
    count = ops.sum(mask + ops.zeros_like(values))  # broadcast (batch size may be unknown)
    return ops.sum(values) / ops.maximum(count, 1.0)


def smooth_l1(y_true: Any, y_pred: Any) -> Any:
    """Elementwise smooth L1 (Huber with delta 1): 0.5 d^2 if |d| < 1 else |d| - 0.5."""
    diff = ops.abs(ops.cast(y_true, "float32") - ops.cast(y_pred, "float32"))
    return ops.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5)


def _sparse_ce(labels: Any, logits: Any) -> Any:
    """Per-entry softmax cross-entropy. labels int [...], logits [..., C] -> [...]."""
    return ops.sparse_categorical_crossentropy(labels, ops.cast(logits, "float32"),
                                               from_logits=True)


def rpn_class_loss(rpn_match: Any, rpn_class_logits: Any) -> Any:
    """RPN anchor classifier loss.

    rpn_match: [B, A, 1] int (1 positive, -1 negative, 0 neutral);
    rpn_class_logits: [B, A, 2]. Mean cross-entropy over the non-neutral anchors.
    """
    rpn_match = ops.squeeze(ops.cast(rpn_match, "int32"), -1)  # [B, A]
    anchor_class = ops.cast(ops.equal(rpn_match, 1), "int32")
    loss = _sparse_ce(anchor_class, rpn_class_logits)  # [B, A]
    return _masked_mean(loss, ops.not_equal(rpn_match, 0))


def positive_anchor_deltas(rpn_match: Any, rpn_bbox: Any, count: int) -> tuple[Any, Any]:
    """The predicted deltas of the positive anchors, in anchor order, padded to count.

    rpn_match: [B, A] int; rpn_bbox: [B, A, 4]. Returns deltas [B, count, 4] and a 0/1
    validity mask [B, count]. This is Matterport's batch_pack_graph with a static size:
    positives are packed in anchor order, like the targets in input_rpn_bbox.
    """
    num_anchors = rpn_bbox.shape[1]
    positive = ops.equal(rpn_match, 1)  # [B, A]
    # Larger key for earlier anchors, 0 for non-positives: top_k returns them in order.
    key = ops.where(positive, float(num_anchors) - ops.cast(ops.arange(num_anchors), "float32"),
                    0.0)
    k = min(count, num_anchors)
    values, indices = ops.top_k(key, k, sorted=True)  # [B, k]
    deltas = ops.take_along_axis(rpn_bbox, ops.expand_dims(indices, -1), axis=1)  # [B, k, 4]
    valid = ops.cast(values > 0, "float32")
    if k < count:
        deltas = ops.pad(deltas, [[0, 0], [0, count - k], [0, 0]])
        valid = ops.pad(valid, [[0, 0], [0, count - k]])
    return deltas, valid


def rpn_bbox_loss(target_bbox: Any, rpn_match: Any, rpn_bbox: Any) -> Any:
    """RPN box regression loss: smooth L1 over the positive anchors.

    target_bbox: [B, RPN_TRAIN_ANCHORS_PER_IMAGE, 4] (positives first, zero padded);
    rpn_match: [B, A, 1]; rpn_bbox: [B, A, 4]. Mean over positive anchors x 4 coordinates.
    """
    rpn_match = ops.squeeze(ops.cast(rpn_match, "int32"), -1)
    count = target_bbox.shape[1]
    deltas, valid = positive_anchor_deltas(rpn_match, rpn_bbox, count)
    loss = smooth_l1(target_bbox, deltas)  # [B, count, 4]
    return _masked_mean(loss, ops.expand_dims(valid, -1))


def mrcnn_class_loss(target_class_ids: Any, pred_class_logits: Any, active_class_ids: Any) -> Any:
    """Classifier loss; predictions of classes not in the image's dataset do not count.

    target_class_ids: [B, T] int (0 = background, including zero-padded ROIs, as Matterport);
    pred_class_logits: [B, T, C]; active_class_ids: [B, C] (1 = class in the image's source).
    """
    target_class_ids = ops.cast(target_class_ids, "int32")
    pred_ids = ops.argmax(pred_class_logits, axis=2)  # [B, T]
    pred_active = ops.take_along_axis(ops.cast(active_class_ids, "float32"), pred_ids, axis=1)
    loss = _sparse_ce(target_class_ids, pred_class_logits)  # [B, T]
    return _masked_mean(loss, pred_active)


def _select_class(values: Any, class_ids: Any) -> Any:
    """values [B, T, C, ...] -> [B, T, ...] at class_ids [B, T] (one-hot product, any backend)."""
    num_classes = values.shape[2]
    one_hot = ops.one_hot(class_ids, num_classes, dtype=values.dtype)  # [B, T, C]
    for _ in range(len(values.shape) - 3):
        one_hot = ops.expand_dims(one_hot, -1)
    return ops.sum(values * one_hot, axis=2)


def mrcnn_bbox_loss(target_bbox: Any, target_class_ids: Any, pred_bbox: Any) -> Any:
    """Box refinement loss: smooth L1 on the positive ROIs' deltas of their GT class.

    target_bbox: [B, T, 4]; target_class_ids: [B, T]; pred_bbox: [B, T, C, 4].
    """
    target_class_ids = ops.cast(target_class_ids, "int32")
    pred = _select_class(ops.cast(pred_bbox, "float32"), target_class_ids)  # [B, T, 4]
    positive = ops.expand_dims(target_class_ids > 0, -1)
    return _masked_mean(smooth_l1(target_bbox, pred), positive)


def mrcnn_mask_loss(target_masks: Any, target_class_ids: Any, pred_masks: Any) -> Any:
    """Mask loss: binary cross-entropy on the GT class channel of the positive ROIs.

    target_masks: [B, T, h, w] (0/1); target_class_ids: [B, T];
    pred_masks: [B, T, h, w, C] sigmoid probabilities. Mean over positive ROIs x h x w.
    """
    target_class_ids = ops.cast(target_class_ids, "int32")
    pred = ops.transpose(ops.cast(pred_masks, "float32"), (0, 1, 4, 2, 3))  # [B, T, C, h, w]
    pred = _select_class(pred, target_class_ids)  # [B, T, h, w]
    eps = 1e-7
    pred = ops.clip(pred, eps, 1.0 - eps)
    target = ops.cast(target_masks, "float32")
    bce = -(target * ops.log(pred) + (1.0 - target) * ops.log(1.0 - pred))
    positive = ops.cast(target_class_ids > 0, "float32")[:, :, None, None]
    return _masked_mean(bce, positive)
