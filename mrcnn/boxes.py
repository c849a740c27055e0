"""Boxes: IoU, encode/decode (deltas), normalisation, clipping and anchors.

Every box is (y1, x1, y2, x2). Pixel boxes have y2/x2 exclusive, as in Matterport; normalized
boxes follow Matterport's norm_boxes: (y1, x1, y2 - 1, x2 - 1) / (h - 1, w - 1).

Two twins of each operation: numpy (data pipeline, metrics) and keras.ops (`*_graph`, used
inside the model on any backend). The keras.ops versions accept any leading dimensions
(`[..., 4]`) unless stated otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops

# ============================================================================ numpy: IoU


def compute_iou(
    box: np.ndarray, boxes: np.ndarray, box_area: float, boxes_area: np.ndarray
) -> np.ndarray:
    """IoU of one box with many. Areas are passed in so callers can compute them once.

    box: [4]; boxes: [N, 4]; box_area: scalar; boxes_area: [N]. Returns [N] (0 where the
    union is empty).
    """
    y1 = np.maximum(box[0], boxes[:, 0])
    y2 = np.minimum(box[2], boxes[:, 2])
    x1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = box_area + boxes_area - intersection
    return _safe_divide(intersection, union)


def compute_overlaps(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU between two sets of boxes. boxes1 [N1, 4], boxes2 [N2, 4] -> [N1, N2]."""
    boxes1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    b1 = boxes1[:, None, :]  # [N1, 1, 4]
    b2 = boxes2[None, :, :]  # [1, N2, 4]
    intersection = _intersection(b1, b2, np.minimum, np.maximum)
    union = _area(b1) + _area(b2) - intersection
    return _safe_divide(intersection, union)


def compute_overlaps_masks(masks1: np.ndarray, masks2: np.ndarray) -> np.ndarray:
    """IoU between two sets of masks. masks1 [H, W, N1], masks2 [H, W, N2] -> [N1, N2].

    Values > 0.5 count as inside, so soft masks work too.
    """
    n1, n2 = masks1.shape[-1], masks2.shape[-1]
    if n1 == 0 or n2 == 0:
        return np.zeros((n1, n2))
    m1 = np.reshape(masks1 > 0.5, (-1, n1)).astype(np.float32)  # [H*W, N1]
    m2 = np.reshape(masks2 > 0.5, (-1, n2)).astype(np.float32)  # [H*W, N2]
    area1 = m1.sum(axis=0)
    area2 = m2.sum(axis=0)
    intersections = m1.T @ m2  # [N1, N2]
    union = area1[:, None] + area2[None, :] - intersections
    return _safe_divide(intersections, union)


def _intersection(b1: Any, b2: Any, minimum: Any, maximum: Any) -> Any:
    """Intersection area of broadcastable [..., 4] boxes; numpy or keras.ops min/max."""
    inter_h = maximum(minimum(b1[..., 2], b2[..., 2]) - maximum(b1[..., 0], b2[..., 0]), 0.0)
    inter_w = maximum(minimum(b1[..., 3], b2[..., 3]) - maximum(b1[..., 1], b2[..., 1]), 0.0)
    return inter_h * inter_w


def _area(boxes: Any) -> Any:
    """Area of [..., 4] boxes -> [...]."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (degenerate, e.g. zero-padded, boxes)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


# ====================================================================== numpy: deltas


def box_refinement(box: np.ndarray, gt_box: np.ndarray) -> np.ndarray:
    """Deltas that turn box into gt_box. box, gt_box [N, 4] -> [N, (dy, dx, log dh, log dw)]."""
    box = np.asarray(box, dtype=np.float32)
    gt_box = np.asarray(gt_box, dtype=np.float32)
    cy, cx, h, w = _centers_sizes(box)
    gcy, gcx, gh, gw = _centers_sizes(gt_box)
    return np.stack([(gcy - cy) / h, (gcx - cx) / w, np.log(gh / h), np.log(gw / w)], axis=-1)


def apply_box_deltas_np(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Apply (dy, dx, log dh, log dw) deltas. boxes, deltas [N, 4] -> float32 [N, 4]."""
    boxes = np.asarray(boxes, dtype=np.float32)
    deltas = np.asarray(deltas, dtype=np.float32)
    return _apply_deltas(boxes, deltas, np.exp, np.stack)


def _apply_deltas(boxes: Any, deltas: Any, exp: Any, stack: Any) -> Any:
    """The delta arithmetic of both twins, numpy or keras tensors [..., 4]: the centre moves
    by (dy * h, dx * w), the size scales by (exp(log dh), exp(log dw))."""
    cy, cx, h, w = _centers_sizes(boxes)
    cy = cy + deltas[..., 0] * h
    cx = cx + deltas[..., 1] * w
    h = h * exp(deltas[..., 2])
    w = w * exp(deltas[..., 3])
    y1 = cy - 0.5 * h
    x1 = cx - 0.5 * w
    return stack([y1, x1, y1 + h, x1 + w], axis=-1)


def _centers_sizes(boxes: Any) -> tuple[Any, Any, Any, Any]:
    """[..., 4] boxes -> (center_y, center_x, height, width); numpy or keras tensors."""
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * h, boxes[..., 1] + 0.5 * w, h, w


# ================================================================= numpy: normalisation


def norm_boxes(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Pixel boxes [N, 4] -> normalized float32 [N, 4]. shape: (height, width) of the image."""
    scale, shift = _norm_scale_shift(shape)
    return ((np.asarray(boxes) - shift) / scale).astype(np.float32)


def denorm_boxes(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Normalized boxes [N, 4] -> int32 pixel boxes [N, 4] (inverse of norm_boxes)."""
    return np.around(pixel_edges(boxes, shape)).astype(np.int32)


def pixel_edges(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Normalized boxes [N, 4] -> float64 pixel edges [N, (y1, x1, y2, x2)], y2/x2 exclusive:
    denorm_boxes before rounding."""
    scale, shift = _norm_scale_shift(shape)
    return np.asarray(boxes) * scale + shift


def _norm_scale_shift(shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape[0], shape[1]
    return np.array([h - 1, w - 1, h - 1, w - 1], np.float64), np.array([0, 0, 1, 1], np.float64)


# ======================================================================= numpy: anchors


def generate_anchors(
    scales: float | Sequence[float],
    ratios: Sequence[float],
    shape: Sequence[int],
    feature_stride: int,
    anchor_stride: int,
) -> np.ndarray:
    """Anchors of one feature map, in pixels: [rows * cols * len(scales) * len(ratios), 4].

    scales: anchor side lengths in pixels; ratios: width / height; shape: feature map
    (rows, cols); feature_stride: image pixels per feature cell; anchor_stride: cells
    between anchors. Order: row-major over positions, then (ratio, scale) per position.
    """
    scales, ratios = np.meshgrid(np.array(scales, dtype=np.float64), np.array(ratios))
    scales, ratios = scales.flatten(), ratios.flatten()
    heights = scales / np.sqrt(ratios)
    widths = scales * np.sqrt(ratios)

    shifts_y = np.arange(0, shape[0], anchor_stride) * feature_stride
    shifts_x = np.arange(0, shape[1], anchor_stride) * feature_stride
    shifts_x, shifts_y = np.meshgrid(shifts_x, shifts_y)

    # Every (position, size) combination: [positions, sizes]
    box_widths, box_centers_x = np.meshgrid(widths, shifts_x)
    box_heights, box_centers_y = np.meshgrid(heights, shifts_y)
    centers = np.stack([box_centers_y, box_centers_x], axis=2).reshape([-1, 2])
    sizes = np.stack([box_heights, box_widths], axis=2).reshape([-1, 2])
    return np.concatenate([centers - 0.5 * sizes, centers + 0.5 * sizes], axis=1)


def generate_pyramid_anchors(
    scales: Sequence[float],
    ratios: Sequence[float],
    feature_shapes: Sequence[Sequence[int]],
    feature_strides: Sequence[int],
    anchor_stride: int,
) -> np.ndarray:
    """Anchors of every pyramid level, one scale per level, concatenated: [A, 4] pixels."""
    return np.concatenate(
        [
            generate_anchors(scale, ratios, shape, stride, anchor_stride)
            for scale, shape, stride in zip(scales, feature_shapes, feature_strides, strict=True)
        ],
        axis=0,
    )


def strided_shapes(image_shape: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    """(rows, cols) of feature maps at the given strides of an image: int [levels, 2]."""
    return np.array(
        [
            [int(math.ceil(image_shape[0] / stride)), int(math.ceil(image_shape[1] / stride))]
            for stride in strides
        ]
    )


def compute_backbone_shapes(config: Any, image_shape: Sequence[int]) -> np.ndarray:
    """(rows, cols) of each FPN level for an input image: int [levels, 2].

    A callable BACKBONE brings its own COMPUTE_BACKBONE_SHAPE, as in Matterport.
    """
    if callable(config.BACKBONE):
        return np.asarray(config.COMPUTE_BACKBONE_SHAPE(image_shape))
    return strided_shapes(image_shape, config.BACKBONE_STRIDES)


def pyramid_anchors(
    image_shape: Sequence[int],
    scales: Sequence[float],
    ratios: Sequence[float],
    feature_shapes: Sequence[Sequence[int]],
    feature_strides: Sequence[int],
    anchor_stride: int,
) -> np.ndarray:
    """Normalized anchors float32 [A, 4] of an image (rows, cols), in RPN output order.

    The one builder behind get_anchors (training targets, model inputs) and the proposal
    layer, so both index the same anchors.
    """
    pixels = generate_pyramid_anchors(scales, ratios, feature_shapes, feature_strides,
                                      anchor_stride)  # fmt: skip
    return norm_boxes(pixels, tuple(image_shape[:2]))


_ANCHOR_CACHE: dict[tuple, np.ndarray] = {}


def get_anchors(config: Any, image_shape: Sequence[int]) -> np.ndarray:
    """Normalized pyramid anchors float32 [A, 4] for an image shape (cached, read-only).

    The cache key holds the image (height, width) and every config field the anchors depend
    on, so two configs never share a wrong entry.
    """
    backbone_shapes = compute_backbone_shapes(config, image_shape)
    key = (
        tuple(int(s) for s in image_shape[:2]),
        tuple(map(float, np.ravel(config.RPN_ANCHOR_SCALES))),
        tuple(map(float, np.ravel(config.RPN_ANCHOR_RATIOS))),
        tuple(map(int, np.ravel(config.BACKBONE_STRIDES))),
        int(config.RPN_ANCHOR_STRIDE),
        tuple(map(int, backbone_shapes.ravel())),
    )
    if key not in _ANCHOR_CACHE:
        normalized = pyramid_anchors(
            image_shape,
            config.RPN_ANCHOR_SCALES,
            config.RPN_ANCHOR_RATIOS,
            backbone_shapes,
            config.BACKBONE_STRIDES,
            config.RPN_ANCHOR_STRIDE,
        )
        normalized.flags.writeable = False
        _ANCHOR_CACHE[key] = normalized
    return _ANCHOR_CACHE[key]


# ============================================================================ keras.ops


def apply_box_deltas_graph(boxes: Any, deltas: Any) -> Any:
    """keras.ops twin of apply_box_deltas_np. boxes, deltas [..., 4] -> [..., 4]."""
    boxes = ops.convert_to_tensor(boxes)
    deltas = ops.cast(deltas, boxes.dtype)
    return _apply_deltas(boxes, deltas, ops.exp, ops.stack)


def clip_boxes_graph(boxes: Any, window: Any) -> Any:
    """Clip boxes [..., 4] to window [4] (wy1, wx1, wy2, wx2)."""
    boxes = ops.convert_to_tensor(boxes)
    window = ops.cast(window, boxes.dtype)
    lo = ops.stack([window[0], window[1], window[0], window[1]])  # [4]
    hi = ops.stack([window[2], window[3], window[2], window[3]])  # [4]
    return ops.maximum(ops.minimum(boxes, hi), lo)


def overlaps_graph(boxes1: Any, boxes2: Any) -> Any:
    """IoU between boxes1 [N1, 4] and boxes2 [N2, 4] -> [N1, N2] (0 for empty unions)."""
    boxes1 = ops.convert_to_tensor(boxes1)
    boxes2 = ops.cast(boxes2, boxes1.dtype)
    b1 = ops.expand_dims(boxes1, 1)  # [N1, 1, 4]
    b2 = ops.expand_dims(boxes2, 0)  # [1, N2, 4]
    intersection = _intersection(b1, b2, ops.minimum, ops.maximum)
    union = _area(b1) + _area(b2) - intersection
    return ops.divide_no_nan(intersection, union)


def box_refinement_graph(box: Any, gt_box: Any) -> Any:
    """keras.ops twin of box_refinement. box, gt_box [..., 4] -> [..., 4] deltas."""
    box = ops.cast(box, "float32")
    gt_box = ops.cast(gt_box, "float32")
    cy, cx, h, w = _centers_sizes(box)
    gcy, gcx, gh, gw = _centers_sizes(gt_box)
    return ops.stack([(gcy - cy) / h, (gcx - cx) / w, ops.log(gh / h), ops.log(gw / w)], axis=-1)


def norm_boxes_graph(boxes: Any, shape: Any) -> Any:
    """Pixel boxes [..., 4] -> normalized float32. shape: (height, width) tensor or tuple."""
    scale, shift = _norm_scale_shift_graph(shape)
    return (ops.cast(boxes, "float32") - shift) / scale


def denorm_boxes_graph(boxes: Any, shape: Any) -> Any:
    """Normalized boxes [..., 4] -> int32 pixel boxes (inverse of norm_boxes_graph)."""
    scale, shift = _norm_scale_shift_graph(shape)
    return ops.cast(ops.round(ops.cast(boxes, "float32") * scale + shift), "int32")


def _norm_scale_shift_graph(shape: Any) -> tuple[Any, Any]:
    shape = ops.cast(ops.convert_to_tensor(shape), "float32")
    h, w = shape[0], shape[1]
    scale = ops.stack([h, w, h, w]) - 1.0
    shift = ops.convert_to_tensor(np.array([0.0, 0.0, 1.0, 1.0], np.float32))
    return scale, shift


__all__ = [
    "compute_iou",
    "compute_overlaps",
    "compute_overlaps_masks",
    "box_refinement",
    "apply_box_deltas_np",
    "norm_boxes",
    "denorm_boxes",
    "generate_anchors",
    "generate_pyramid_anchors",
    "strided_shapes",
    "compute_backbone_shapes",
    "pyramid_anchors",
    "get_anchors",
    "apply_box_deltas_graph",
    "clip_boxes_graph",
    "overlaps_graph",
    "box_refinement_graph",
    "norm_boxes_graph",
    "denorm_boxes_graph",
]
