"""Pyramid ROIAlign: crop each box from the FPN level that matches its size.

Matterport's PyramidROIAlign with a static output shape, in box order. The cropping itself
is mrcnn.ops.pyramid_crop_and_resize: on TF each box is cropped from its own level only; the
keras.ops reference (JAX) crops every box from every level and selects with a mask, so no
dynamic shapes appear there (XLA/jit friendly).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import layers, ops

from mrcnn import ops as mops


def roi_levels(boxes: Any, image_area: float) -> Any:
    """FPN level (2..5) per box, as Matterport: clip(4 + log2(sqrt(h*w) / (224/sqrt(area))), 2, 5).

    boxes: [..., (y1, x1, y2, x2)] normalized; image_area: pixels of the (molded) image.
    Returns int32 [...].
    """
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    scale = 224.0 / float(np.sqrt(image_area))
    # log2 of 0 (zero-padded boxes) is -inf; the clip maps it to level 2.
    size = ops.sqrt(ops.maximum(h * w, 1e-12))
    level = 4.0 + ops.log(size / scale) / float(np.log(2.0))
    return ops.cast(ops.clip(ops.round(level), 2.0, 5.0), "int32")


class PyramidROIAlign(layers.Layer):
    """ROIAlign over the feature pyramid.

    Inputs: boxes [B, N, (y1, x1, y2, x2)] normalized, feature maps [P2, P3, P4, P5], each
    [B, h_l, w_l, C]. Output: [B * N, pool_h, pool_w, C] in box order (batch-major): the heads
    work on the flat [B * N, ...] batch and reshape back at the end.
    """

    def __init__(self, pool_shape: tuple[int, int], image_shape: tuple[int, int], **kwargs: Any):
        super().__init__(**kwargs)
        self.pool_shape = tuple(int(v) for v in pool_shape)
        self.image_shape = tuple(int(v) for v in image_shape[:2])

    def call(self, boxes: Any, feature_maps: list[Any]) -> Any:
        boxes = ops.stop_gradient(ops.cast(boxes, "float32"))
        batch, num_boxes = boxes.shape[0], boxes.shape[1]
        flat = ops.reshape(boxes, (-1, 4))  # [B*N, 4]
        image_area = float(self.image_shape[0] * self.image_shape[1])
        level = roi_levels(flat, image_area)  # [B*N]
        if batch is None:
            batch = ops.shape(boxes)[0]
        box_indices = ops.repeat(ops.arange(batch, dtype="int32"), num_boxes)  # [B*N]
        # Each box is cropped from its own level (P2..P5 -> map 0..3).
        return mops.pyramid_crop_and_resize(feature_maps, flat, box_indices, level - 2,
                                            self.pool_shape)

    def compute_output_shape(self, boxes_shape: Any, feature_maps_shape: list[Any]) -> tuple:
        count = None
        if boxes_shape[0] is not None and boxes_shape[1] is not None:
            count = boxes_shape[0] * boxes_shape[1]
        return (count, *self.pool_shape, feature_maps_shape[0][-1])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(pool_shape=self.pool_shape, image_shape=self.image_shape)
        return config
