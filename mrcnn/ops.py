"""The two special kernels of Mask R-CNN, NMS and crop-and-resize, with one fast path per backend.

This is the ONLY backend-specific module of mrcnn. Dispatch happens at call time on
keras.backend.backend():

- tensorflow: tf.image ops (NonMaxSuppressionV4 with static padding, crop_and_resize).
- torch: torchvision.ops.nms / roi_align (if torchvision imports), with the box coordinates
  converted so the samples land exactly where tf.image.crop_and_resize puts them.
- anything else (JAX): the keras.ops reference implementations below, which are jit
  compatible (static shapes, keras.ops.fori_loop).

Both references are public (non_max_suppression_reference, crop_and_resize_reference) so
tests can compare them with the fast path in one process.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

# ========================================================================== public API


def non_max_suppression(
    boxes: Any,
    scores: Any,
    max_output_size: int,
    iou_threshold: float,
    score_threshold: float = float("-inf"),
) -> Any:
    """Greedy NMS with tf.image.non_max_suppression semantics and a static output shape.

    boxes: [N, (y1, x1, y2, x2)] (any orientation); scores: [N]. Boxes with
    score <= score_threshold are ignored; a box is suppressed when its IoU with a kept,
    higher-scoring box is > iou_threshold. Returns int32 [max_output_size] indices into
    boxes, by descending score, padded with -1 past the kept count.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _nms_tf(boxes, scores, max_output_size, iou_threshold, score_threshold)
    if backend == "torch" and _has_torchvision():
        return _nms_torch(boxes, scores, max_output_size, iou_threshold, score_threshold)
    return non_max_suppression_reference(
        boxes, scores, max_output_size, iou_threshold, score_threshold
    )


def top_k(values: Any, k: int) -> tuple[Any, Any]:
    """The k largest values along the last axis and their indices, sorted descending, ties
    broken by the lower index (tf.math.top_k's order) on every backend.

    torch.topk leaves the order of equal values unspecified; a saturated softmax (many RPN
    scores of exactly 1.0) then picks other anchors than TF does, so torch uses a stable sort.
    """
    if keras.backend.backend() == "torch":
        import torch

        values = ops.convert_to_tensor(values)
        sorted_values, indices = torch.sort(values, dim=-1, descending=True, stable=True)
        return sorted_values[..., :k], indices[..., :k]
    return ops.top_k(values, k, sorted=True)


def crop_and_resize(image: Any, boxes: Any, box_indices: Any, crop_size: Sequence[int]) -> Any:
    """Bilinear crops with tf.image.crop_and_resize semantics (extrapolation value 0).

    image: [B, H, W, C]; boxes: [N, (y1, x1, y2, x2)] normalized, so that y maps to
    y * (H - 1); box_indices: int32 [N] image of each box; crop_size: (h, w).
    Returns float32 [N, h, w, C].
    """
    crop_size = (int(crop_size[0]), int(crop_size[1]))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.image.crop_and_resize(
            tf.cast(image, tf.float32),
            tf.cast(boxes, tf.float32),
            tf.cast(box_indices, tf.int32),
            crop_size,
            method="bilinear",
            extrapolation_value=0.0,
        )
    if backend == "torch" and _has_torchvision():
        return _crop_and_resize_torch(image, boxes, box_indices, crop_size)
    return crop_and_resize_reference(image, boxes, box_indices, crop_size)


def pyramid_crop_and_resize(
    feature_maps: Sequence[Any], boxes: Any, box_indices: Any, levels: Any,
    crop_size: Sequence[int],
) -> Any:
    """ROIAlign over a feature pyramid: each box cropped from the one map its level names.

    feature_maps: L maps [B, h_l, w_l, C]; boxes: [N, 4] normalized; box_indices: int32 [N];
    levels: int32 [N] in 0..L-1, the map of each box. Returns float32 [N, h, w, C] in box
    order. The TF fast path crops each box once (gather per level, one crop_and_resize per
    level, inverse permutation back); the reference crops every box from every map and
    selects with a mask (static shapes, jit friendly) -- the same numbers, L times the work.
    """
    crop_size = (int(crop_size[0]), int(crop_size[1]))
    if keras.backend.backend() == "tensorflow":
        return _pyramid_crop_tf(feature_maps, boxes, box_indices, levels, crop_size)
    return pyramid_crop_and_resize_reference(feature_maps, boxes, box_indices, levels, crop_size)


# =================================================================== keras.ops reference


def non_max_suppression_reference(
    boxes: Any,
    scores: Any,
    max_output_size: int,
    iou_threshold: float,
    score_threshold: float = float("-inf"),
) -> Any:
    """keras.ops NMS, jit compatible; same contract as non_max_suppression.

    Each of max_output_size steps picks the best still-active box and deactivates it and
    every box overlapping it by IoU > iou_threshold: O(max_output_size * N).
    """
    boxes = ops.cast(boxes, "float32")  # [N, 4]
    scores = ops.cast(scores, "float32")  # [N]
    num_boxes = boxes.shape[0]
    if num_boxes == 0:
        return ops.full([max_output_size], -1, dtype="int32")
    positions = ops.arange(num_boxes, dtype="int32")  # [N]
    slots = ops.arange(max_output_size, dtype="int32")  # [max_output_size]
    corners = _canonical_corners(boxes)
    areas = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])  # [N]
    neg_inf = ops.full_like(scores, float("-inf"))

    def step(i: Any, state: tuple[Any, Any]) -> tuple[Any, Any]:
        active, selected = state  # bool [N], int32 [max_output_size]
        best = ops.cast(ops.argmax(ops.where(active, scores, neg_inf)), "int32")
        found = ops.any(active)
        iou = _iou_one_to_many(corners[best], areas[best], corners, areas)  # [N]
        suppressed = ops.logical_or(iou > iou_threshold, ops.equal(positions, best))
        active = ops.logical_and(active, ops.logical_or(ops.logical_not(found), ~suppressed))
        pick = ops.where(found, best, -1)
        selected = ops.where(ops.equal(slots, i), pick, selected)
        return active, selected

    active = scores > score_threshold
    selected = ops.full([max_output_size], -1, dtype="int32")
    _, selected = ops.fori_loop(0, max_output_size, step, (active, selected))
    return selected


def crop_and_resize_reference(
    image: Any, boxes: Any, box_indices: Any, crop_size: Sequence[int]
) -> Any:
    """keras.ops crop_and_resize with tf.image semantics; same contract as crop_and_resize.

    Gathers the four neighbours of every sample point from the flattened batch, so memory
    is O(N * h * w * C) rather than one image copy per box.
    """
    image = ops.cast(image, "float32")  # [B, H, W, C]
    boxes = ops.cast(boxes, "float32")  # [N, 4]
    box_indices = ops.cast(box_indices, "int32")  # [N]
    _, height, width, channels = image.shape
    crop_h, crop_w = int(crop_size[0]), int(crop_size[1])

    in_y, valid_y = _sample_coords(boxes[:, 0], boxes[:, 2], height, crop_h)  # [N, h]
    in_x, valid_x = _sample_coords(boxes[:, 1], boxes[:, 3], width, crop_w)  # [N, w]
    top, bottom, y_lerp = _neighbours(in_y, height)
    left, right, x_lerp = _neighbours(in_x, width)

    flat = ops.reshape(image, [-1, channels])  # [B*H*W, C]
    base = ops.reshape(box_indices * (height * width), [-1, 1, 1])  # [N, 1, 1]

    def gather(rows: Any, cols: Any) -> Any:
        # rows [N, h], cols [N, w] -> pixels [N, h, w, C]
        index = base + rows[:, :, None] * width + cols[:, None, :]
        pixels = ops.take(flat, ops.reshape(index, [-1]), axis=0)
        return ops.reshape(pixels, [-1, crop_h, crop_w, channels])

    x_lerp = x_lerp[:, None, :, None]  # [N, 1, w, 1]
    y_lerp = y_lerp[:, :, None, None]  # [N, h, 1, 1]
    top_row = gather(top, left) + (gather(top, right) - gather(top, left)) * x_lerp
    bottom_row = gather(bottom, left) + (gather(bottom, right) - gather(bottom, left)) * x_lerp
    crops = top_row + (bottom_row - top_row) * y_lerp
    valid = ops.logical_and(valid_y[:, :, None], valid_x[:, None, :])  # [N, h, w]
    return ops.where(valid[..., None], crops, 0.0)


def pyramid_crop_and_resize_reference(
    feature_maps: Sequence[Any], boxes: Any, box_indices: Any, levels: Any,
    crop_size: Sequence[int],
) -> Any:
    """Static-shape pyramid_crop_and_resize: every box from every map, selected by level."""
    levels = ops.cast(levels, "int32")
    pooled = None
    for i, feature_map in enumerate(feature_maps):
        crops = crop_and_resize(feature_map, boxes, box_indices, crop_size)  # [N, h, w, C]
        selected = ops.reshape(ops.cast(ops.equal(levels, i), crops.dtype), (-1, 1, 1, 1))
        pooled = crops * selected if pooled is None else pooled + crops * selected
    return pooled


# ======================================================================= shared helpers


def _sample_coords(start: Any, end: Any, length: int, n: int) -> tuple[Any, Any]:
    """TF's sample positions along one axis: coords float32 [N, n] and in-image bool [N, n].

    Point i is start*(L-1) + i*(end-start)*(L-1)/(n-1); for n == 1 the box centre.
    """
    scale = float(length - 1)
    if n > 1:
        step = (end - start) * scale / float(n - 1)  # [N]
        steps = ops.arange(n, dtype="float32")  # [n]
        coords = start[:, None] * scale + steps[None, :] * step[:, None]
    else:
        coords = (0.5 * (start + end) * scale)[:, None]
    valid = ops.logical_and(coords >= 0.0, coords <= scale)
    return coords, valid


def _neighbours(coords: Any, length: int) -> tuple[Any, Any, Any]:
    """Floor/ceil pixel indices (clipped into the image) and the lerp weight of coords."""
    low = ops.floor(coords)
    lerp = coords - low
    low_i = ops.cast(ops.clip(low, 0, length - 1), "int32")
    high_i = ops.cast(ops.clip(ops.ceil(coords), 0, length - 1), "int32")
    return low_i, high_i, lerp


def _canonical_corners(boxes: Any) -> Any:
    """[N, 4] boxes in any orientation -> (ymin, xmin, ymax, xmax), as TF's NMS reads them."""
    return ops.concatenate(
        [ops.minimum(boxes[:, :2], boxes[:, 2:]), ops.maximum(boxes[:, :2], boxes[:, 2:])], axis=1
    )


def _iou_one_to_many(box: Any, area: Any, boxes: Any, areas: Any) -> Any:
    """IoU of box [4] with boxes [N, 4] (canonical corners); 0 when either area is <= 0."""
    inter_h = ops.maximum(ops.minimum(box[2], boxes[:, 2]) - ops.maximum(box[0], boxes[:, 0]), 0.0)
    inter_w = ops.maximum(ops.minimum(box[3], boxes[:, 3]) - ops.maximum(box[1], boxes[:, 1]), 0.0)
    intersection = inter_h * inter_w
    union = area + areas - intersection
    degenerate = ops.logical_or(area <= 0.0, areas <= 0.0)
    return ops.where(degenerate, 0.0, intersection / ops.where(degenerate, 1.0, union))


def _has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


# ============================================================================ TF path


def _nms_tf(
    boxes: Any, scores: Any, max_output_size: int, iou_threshold: float, score_threshold: float
) -> Any:
    """NonMaxSuppressionV4 pads to a static size (XLA friendly); padding becomes -1."""
    import tensorflow as tf

    indices, valid = tf.raw_ops.NonMaxSuppressionV4(
        boxes=tf.cast(boxes, tf.float32),
        scores=tf.cast(scores, tf.float32),
        max_output_size=max_output_size,
        iou_threshold=tf.constant(iou_threshold, tf.float32),
        score_threshold=tf.constant(score_threshold, tf.float32),
        pad_to_max_output_size=True,
    )
    keep = tf.range(max_output_size) < valid
    return tf.where(keep, tf.cast(indices, tf.int32), -1)


def _pyramid_crop_tf(
    feature_maps: Sequence[Any], boxes: Any, box_indices: Any, levels: Any,
    crop_size: tuple[int, int],
) -> Any:
    """Crop each box from its own level only (dynamic gathers; TF graph mode, no XLA)."""
    import tensorflow as tf

    boxes = tf.cast(boxes, tf.float32)  # [N, 4]
    box_indices = tf.cast(box_indices, tf.int32)  # [N]
    levels = tf.cast(levels, tf.int32)  # [N]
    crops, order = [], []
    for i, feature_map in enumerate(feature_maps):
        ix = tf.cast(tf.where(tf.equal(levels, i))[:, 0], tf.int32)  # boxes of this level
        crops.append(tf.image.crop_and_resize(
            tf.cast(feature_map, tf.float32), tf.gather(boxes, ix), tf.gather(box_indices, ix),
            crop_size, method="bilinear", extrapolation_value=0.0))
        order.append(ix)
    # Every box has exactly one level, so the concatenated indices are a permutation.
    pooled = tf.gather(tf.concat(crops, 0), tf.math.invert_permutation(tf.concat(order, 0)))
    channels = feature_maps[0].shape[-1]
    return tf.ensure_shape(pooled, [boxes.shape[0], *crop_size, channels])


# ========================================================================= torch path


def _nms_torch(
    boxes: Any, scores: Any, max_output_size: int, iou_threshold: float, score_threshold: float
) -> Any:
    """torchvision.ops.nms on the boxes above score_threshold, padded with -1.

    Equal scores are visited in index order (as TF does): the candidates are stably sorted
    first and torchvision gets their ranks as scores, so its own sort has no ties to reorder.
    """
    import torch
    import torchvision

    boxes = ops.cast(boxes, "float32")
    scores = ops.cast(scores, "float32")
    corners = _canonical_corners(boxes)  # (ymin, xmin, ymax, xmax)
    candidates = torch.nonzero(scores > score_threshold).flatten()
    order = torch.sort(scores[candidates], descending=True, stable=True).indices
    candidates = candidates[order]
    xyxy = corners[candidates][:, [1, 0, 3, 2]]
    ranks = -torch.arange(candidates.shape[0], dtype=torch.float32, device=xyxy.device)
    kept = candidates[torchvision.ops.nms(xyxy, ranks, float(iou_threshold))]
    kept = kept[:max_output_size].to(torch.int32)
    out = torch.full((max_output_size,), -1, dtype=torch.int32, device=kept.device)
    out[: kept.shape[0]] = kept
    return out


def _crop_and_resize_torch(
    image: Any, boxes: Any, box_indices: Any, crop_size: tuple[int, int]
) -> Any:
    """torchvision roi_align (aligned, one sample per bin) placed on TF's sample grid.

    With aligned=True and sampling_ratio=1, bin i samples start - 0.5 + (i + 0.5) * bin.
    Choosing start = t0 + 0.5 - 0.5 * d and bin = d (d = TF's step) gives t0 + i * d,
    TF's point i. roi_align interpolates up to one pixel outside the image where TF
    returns 0, so TF's in-image mask is applied afterwards.
    """
    import torch
    import torchvision

    image = ops.cast(image, "float32")  # [B, H, W, C]
    boxes = ops.cast(boxes, "float32")  # [N, 4]
    _, height, width, _ = image.shape
    crop_h, crop_w = crop_size
    y_start, y_bin = _torch_axis_box(boxes[:, 0], boxes[:, 2], height, crop_h)
    x_start, x_bin = _torch_axis_box(boxes[:, 1], boxes[:, 3], width, crop_w)
    rois = torch.stack(
        [
            ops.cast(box_indices, "float32"),
            x_start,
            y_start,
            x_start + crop_w * x_bin,
            y_start + crop_h * y_bin,
        ],
        dim=1,
    )  # [N, (batch, x1, y1, x2, y2)]
    crops = torchvision.ops.roi_align(
        image.permute(0, 3, 1, 2),  # NCHW
        rois,
        output_size=(crop_h, crop_w),
        spatial_scale=1.0,
        sampling_ratio=1,
        aligned=True,
    ).permute(0, 2, 3, 1)  # [N, h, w, C]
    _, valid_y = _sample_coords(boxes[:, 0], boxes[:, 2], height, crop_h)
    _, valid_x = _sample_coords(boxes[:, 1], boxes[:, 3], width, crop_w)
    valid = (valid_y[:, :, None] & valid_x[:, None, :])[..., None]
    return crops * valid.to(crops.dtype)


def _torch_axis_box(start: Any, end: Any, length: int, n: int) -> tuple[Any, Any]:
    """roi_align box start (pixels) and bin size along one axis for TF's n sample points."""
    scale = float(length - 1)
    if n > 1:
        step = (end - start) * scale / float(n - 1)
        first = start * scale
    else:
        step = ops.zeros_like(start)
        first = 0.5 * (start + end) * scale
    return first + 0.5 - 0.5 * step, step


__all__ = [
    "non_max_suppression",
    "crop_and_resize",
    "pyramid_crop_and_resize",
    "pyramid_crop_and_resize_reference",
    "non_max_suppression_reference",
    "crop_and_resize_reference",
]
