"""Region Proposal Network: the head shared across pyramid levels and the proposal layer."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

from mrcnn import boxes as box_utils
from mrcnn import ops as mops


def build_rpn_model(anchor_stride: int, anchors_per_location: int, depth: int,
                    shared_channels: int = 512) -> keras.Model:
    """The RPN head as a model named "rpn_model" (as Matterport), applied to every level.

    Input "input_rpn_feature_map" [B, h, w, depth]. Outputs:
      rpn_class_logits [B, h*w*anchors, 2], rpn_probs [B, h*w*anchors, 2],
      rpn_bbox [B, h*w*anchors, (dy, dx, log dh, log dw)].
    """
    feature_map = keras.Input(shape=(None, None, depth), name="input_rpn_feature_map")
    # Initialisation (Detectron/torchvision style; loaded weights replace it): He-normal for
    # the ReLU convolution, small N(0, 0.01) for the outputs so training starts from
    # near-uniform scores and near-zero deltas.
    shared = layers.Conv2D(shared_channels, 3, padding="same", activation="relu",
                           strides=anchor_stride, kernel_initializer="he_normal",
                           name="rpn_conv_shared")(feature_map)
    small = keras.initializers.RandomNormal(stddev=0.01)
    x = layers.Conv2D(2 * anchors_per_location, 1, kernel_initializer=small,
                      name="rpn_class_raw")(shared)
    rpn_class_logits = layers.Reshape((-1, 2))(x)
    rpn_probs = layers.Activation("softmax", name="rpn_class_xxx")(rpn_class_logits)
    x = layers.Conv2D(4 * anchors_per_location, 1, kernel_initializer=small,
                      name="rpn_bbox_pred")(shared)
    rpn_bbox = layers.Reshape((-1, 4))(x)
    return keras.Model(feature_map, [rpn_class_logits, rpn_probs, rpn_bbox], name="rpn_model")


class ProposalLayer(layers.Layer):
    """Turns RPN scores and deltas into proposals: top-k, refine, clip, NMS, pad.

    Inputs: rpn_probs [B, A, 2], rpn_bbox [B, A, 4] (deltas, scaled by 1/RPN_BBOX_STD_DEV).
    Output: [B, proposal_count, (y1, x1, y2, x2)] normalized, zero-padded past the kept count.
    The anchors are built from the explicit arguments (no config inside the layer) by
    mrcnn.boxes.pyramid_anchors, the builder of get_anchors: feature_shapes [levels, (rows,
    cols)] are the FPN levels' sizes (compute_backbone_shapes, which honours a custom
    backbone's COMPUTE_BACKBONE_SHAPE); None means image_shape / backbone_strides rounded up.
    """

    def __init__(
        self,
        proposal_count: int,
        nms_threshold: float,
        pre_nms_limit: int,
        rpn_bbox_std_dev: tuple[float, ...],
        image_shape: tuple[int, int],
        anchor_scales: tuple[float, ...],
        anchor_ratios: tuple[float, ...],
        backbone_strides: tuple[int, ...],
        anchor_stride: int,
        batch_size: int,
        feature_shapes: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.proposal_count = int(proposal_count)
        self.nms_threshold = float(nms_threshold)
        self.pre_nms_limit = int(pre_nms_limit)
        self.rpn_bbox_std_dev = tuple(float(v) for v in np.ravel(rpn_bbox_std_dev))
        self.image_shape = tuple(int(v) for v in image_shape[:2])
        self.anchor_scales = tuple(float(v) for v in anchor_scales)
        self.anchor_ratios = tuple(float(v) for v in anchor_ratios)
        self.backbone_strides = tuple(int(v) for v in backbone_strides)
        self.anchor_stride = int(anchor_stride)
        self.batch_size = int(batch_size)
        if feature_shapes is None:
            feature_shapes = box_utils.strided_shapes(self.image_shape, self.backbone_strides)
        self.feature_shapes = tuple(tuple(int(v) for v in shape) for shape in feature_shapes)
        self.anchors = box_utils.pyramid_anchors(
            self.image_shape, self.anchor_scales, self.anchor_ratios, self.feature_shapes,
            self.backbone_strides, self.anchor_stride,
        )  # fmt: skip

    def call(self, rpn_probs: Any, rpn_bbox: Any) -> Any:
        anchors = ops.convert_to_tensor(self.anchors, "float32")  # [A, 4]
        num_anchors = self.anchors.shape[0]
        scores = rpn_probs[:, :, 1]  # [B, A] foreground probability
        deltas = rpn_bbox * ops.convert_to_tensor(np.array(self.rpn_bbox_std_dev, np.float32))
        deltas = clamp_size_deltas(deltas)
        k = min(self.pre_nms_limit, num_anchors)
        top_scores, ix = mops.top_k(scores, k)  # [B, k], ties in anchor order on every backend
        window = ops.convert_to_tensor(np.array([0, 0, 1, 1], np.float32))
        outputs = []
        for b in range(self.batch_size):
            boxes = box_utils.apply_box_deltas_graph(
                ops.take(anchors, ix[b], axis=0), ops.take(deltas[b], ix[b], axis=0)
            )  # [k, 4]
            boxes = box_utils.clip_boxes_graph(boxes, window)
            # A diverging early step can give inf/nan deltas: drop such boxes, not the step.
            finite = ops.all(ops.isfinite(boxes), axis=1)
            boxes = ops.where(finite[:, None], boxes, 0.0)
            keep = mops.non_max_suppression(
                boxes, top_scores[b], self.proposal_count, self.nms_threshold
            )  # [proposal_count], -1 padded
            outputs.append(gather_padded(boxes, keep))
        return ops.stop_gradient(ops.stack(outputs, axis=0))

    def compute_output_shape(self, rpn_probs_shape: Any, rpn_bbox_shape: Any) -> tuple:
        return (rpn_probs_shape[0], self.proposal_count, 4)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            proposal_count=self.proposal_count, nms_threshold=self.nms_threshold,
            pre_nms_limit=self.pre_nms_limit, rpn_bbox_std_dev=self.rpn_bbox_std_dev,
            image_shape=self.image_shape, anchor_scales=self.anchor_scales,
            anchor_ratios=self.anchor_ratios, backbone_strides=self.backbone_strides,
            anchor_stride=self.anchor_stride, batch_size=self.batch_size,
            feature_shapes=self.feature_shapes,
        )
        return config


def gather_padded(values: Any, indices: Any) -> Any:
    """values [N, ...] gathered at indices [K] (int, -1 = padding) -> [K, ...], zeros at -1."""
    valid = indices >= 0
    picked = ops.take(values, ops.maximum(indices, 0), axis=0)
    shape = [-1] + [1] * (len(picked.shape) - 1)
    return picked * ops.reshape(ops.cast(valid, picked.dtype), shape)


# exp() of larger log-size deltas would grow a box more than 1000/16 times (Detectron's clip).
MAX_LOG_SCALE = float(np.log(1000.0 / 16.0))


def clamp_size_deltas(deltas: Any) -> Any:
    """Clip the (log dh, log dw) part of deltas [..., 4] at MAX_LOG_SCALE (no inf boxes)."""
    return ops.concatenate([deltas[..., :2], ops.minimum(deltas[..., 2:], MAX_LOG_SCALE)], axis=-1)
