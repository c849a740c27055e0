"""Inference detection layer: refine ROIs, drop background and weak scores, per-class NMS, pad."""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import layers, ops

from mrcnn import boxes as box_utils
from mrcnn import ops as mops
from mrcnn.rpn import clamp_size_deltas


def window_from_meta(image_meta: Any, image_shape: tuple[int, int]) -> Any:
    """The normalized window (y1, x1, y2, x2) of the real image inside the padded input.

    image_meta: [B, META] laid out as compose_image_meta (window at columns 7..10, pixels).
    Returns [B, 4] normalized with norm_boxes semantics.
    """
    window = ops.cast(image_meta[:, 7:11], "float32")  # [B, 4] pixels
    return box_utils.norm_boxes_graph(window, image_shape)


def refine_detections(
    rois: Any,
    probs: Any,
    deltas: Any,
    window: Any,
    bbox_std_dev: tuple[float, ...],
    min_confidence: float,
    nms_threshold: float,
    max_instances: int,
    score: str = "class",
) -> Any:
    """Detections of one image.

    rois: [N, 4] normalized; probs: [N, C]; deltas: [N, C, 4]; window: [4] normalized.
    score: Config.DETECTION_SCORE, "class" (Matterport: the most probable class, background
    included, scores; NMS per class) or "foreground" (1 - P(background) scores, the most
    probable non-background class is named; NMS across classes).
    Returns [max_instances, 6 + C]: (y1, x1, y2, x2, class_id, score) as Matterport's, then
    the ROI's C class probabilities; zero-padded, by score.
    """
    num_classes = probs.shape[1]
    if score == "foreground":  # P(object), named by the likeliest object class
        class_ids = ops.cast(ops.argmax(probs[:, 1:], axis=1), "int32") + 1  # [N]
        scores = 1.0 - probs[:, 0]  # [N]
    else:  # Matterport: the likeliest class, background included, and its probability
        class_ids = ops.cast(ops.argmax(probs, axis=1), "int32")  # [N]
        scores = ops.max(probs, axis=1)  # [N]
    one_hot = ops.one_hot(class_ids, num_classes, dtype="float32")  # [N, C]
    class_deltas = ops.sum(deltas * one_hot[:, :, None], axis=1)  # [N, 4]
    class_deltas = class_deltas * ops.convert_to_tensor(np.array(bbox_std_dev, np.float32))
    refined = box_utils.apply_box_deltas_graph(rois, clamp_size_deltas(class_deltas))
    refined = box_utils.clip_boxes_graph(refined, window)  # [N, 4]

    keep = ops.logical_and(class_ids > 0, scores >= min_confidence)
    nms_boxes = refined
    if score == "class":
        # Per-class NMS in one call: shift each class to its own region of the plane (boxes
        # are within [0, 1]), so boxes of different classes never overlap.
        nms_boxes = refined + ops.cast(class_ids, "float32")[:, None] * 2.0
    nms_scores = ops.where(keep, scores, -1.0)
    kept = mops.non_max_suppression(
        nms_boxes, nms_scores, max_instances, nms_threshold, score_threshold=-0.5
    )  # [max_instances], -1 padded, by descending score
    valid = ops.cast(kept >= 0, "float32")[:, None]
    safe = ops.maximum(kept, 0)
    detections = ops.concatenate(
        [
            ops.take(refined, safe, axis=0),
            ops.cast(ops.take(class_ids, safe), "float32")[:, None],
            ops.take(scores, safe)[:, None],
            ops.take(probs, safe, axis=0),
        ],
        axis=1,
    )
    return detections * valid


class DetectionLayer(layers.Layer):
    """Final detections of the inference graph.

    Inputs: rois [B, N, 4], mrcnn_class [B, N, C] probabilities, mrcnn_bbox [B, N, C, 4],
    image_meta [B, META]. Output [B, max_instances, (y1, x1, y2, x2, class_id, score) + the
    C class probabilities] with normalized coordinates, zero-padded (refine_detections).
    """

    def __init__(
        self,
        bbox_std_dev: tuple[float, ...],
        min_confidence: float,
        nms_threshold: float,
        max_instances: int,
        image_shape: tuple[int, int],
        batch_size: int,
        score: str = "class",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bbox_std_dev = tuple(float(v) for v in np.ravel(bbox_std_dev))
        self.min_confidence = float(min_confidence)
        self.nms_threshold = float(nms_threshold)
        self.max_instances = int(max_instances)
        self.image_shape = tuple(int(v) for v in image_shape[:2])
        self.batch_size = int(batch_size)
        self.score = str(score)

    def call(self, rois: Any, mrcnn_class: Any, mrcnn_bbox: Any, image_meta: Any) -> Any:
        window = window_from_meta(image_meta, self.image_shape)  # [B, 4]
        outputs = [
            refine_detections(
                rois[b], mrcnn_class[b], mrcnn_bbox[b], window[b], self.bbox_std_dev,
                self.min_confidence, self.nms_threshold, self.max_instances, self.score,
            )
            for b in range(self.batch_size)
        ]
        return ops.stack(outputs, axis=0)

    def compute_output_shape(self, rois_shape: Any, mrcnn_class_shape: Any, mrcnn_bbox_shape: Any,
                             image_meta_shape: Any) -> tuple:
        return (rois_shape[0], self.max_instances, 6 + mrcnn_class_shape[-1])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            bbox_std_dev=self.bbox_std_dev, min_confidence=self.min_confidence,
            nms_threshold=self.nms_threshold, max_instances=self.max_instances,
            image_shape=self.image_shape, batch_size=self.batch_size, score=self.score,
        )
        return config


def unmold_detections(
    detections: np.ndarray,
    mrcnn_mask: np.ndarray,
    original_image_shape: tuple[int, ...],
    image_shape: tuple[int, ...],
    window: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image's network output -> Matterport's results at the original image size.

    detections: [D, (y1, x1, y2, x2, class_id, score) + C class probabilities] normalized,
    zero-padded (DetectionLayer); mrcnn_mask: [D, mh, mw, C]; window: (y1, x1, y2, x2)
    pixels of the image in the molded input. Returns rois int32 [N, 4], class_ids int32 [N],
    scores float32 [N], masks bool [H, W, N] and class_probs float32 [N, C].
    """
    from mrcnn import utils

    zero_ix = np.where(detections[:, 4] == 0)[0]
    n = int(zero_ix[0]) if zero_ix.shape[0] > 0 else detections.shape[0]
    boxes = detections[:n, :4]
    class_ids = detections[:n, 4].astype(np.int32)
    scores = detections[:n, 5].astype(np.float32)
    class_probs = detections[:n, 6:].astype(np.float32)  # [N, C]
    masks = mrcnn_mask[np.arange(n), :, :, class_ids]  # [N, mh, mw]

    # Boxes are normalized to the molded image (Matterport: y / (h - 1), the exclusive y2 as
    # (y2 - 1) / (h - 1)). Back to pixel edges of the molded image, then into the original by
    # the resize itself: the window [wy1, wy2) holds the H original rows, so an edge at y lies
    # at (y - wy1) * H / (wy2 - wy1). (Denormalizing with the original's own (H - 1) instead
    # would add 1 - H / (wy2 - wy1) pixels to every box: +0.4 px for a 224 px scan shown at
    # 384.) The masks are pasted at these fractional edges; rois are them rounded.
    wy1, wx1, wy2, wx2 = (float(v) for v in window)
    to_original = np.array([original_image_shape[0] / (wy2 - wy1),
                            original_image_shape[1] / (wx2 - wx1)] * 2)
    molded_edges = box_utils.pixel_edges(boxes, image_shape[:2])  # [N, 4] float
    exact = (molded_edges - np.array([wy1, wx1, wy1, wx1])) * to_original  # [N, 4] float
    rois = np.around(exact).astype(np.int32)

    # Drop boxes with no area (they can appear at the window's border).
    keep = (rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1]) > 0
    rois, exact, class_ids, scores, masks = (
        rois[keep], exact[keep], class_ids[keep], scores[keep], masks[keep])
    full_masks = utils.paste_masks(masks, exact, original_image_shape)  # [H, W, N] bool
    return rois, class_ids, scores, full_masks, class_probs[keep]
