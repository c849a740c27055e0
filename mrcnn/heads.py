"""Classifier/box head and mask head on pooled ROI features (Matterport layer names).

Matterport wraps each layer in TimeDistributed; here the ROIs are folded into the batch
([B * N, ...]) instead, which is faster and keeps the same weights and layer names, so the
COCO file still loads by name.
"""

from __future__ import annotations

from typing import Any

from keras import initializers, layers, ops

from mrcnn.backbone import BatchNorm
from mrcnn.roi_align import PyramidROIAlign


class UnfoldRois(layers.Layer):
    """[B * N, ...] -> [B, N, ...] for a static number of ROIs N per image."""

    def __init__(self, num_rois: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_rois = int(num_rois)

    def call(self, x: Any) -> Any:
        return ops.reshape(x, (-1, self.num_rois, *x.shape[1:]))

    def compute_output_shape(self, shape: Any) -> tuple:
        batch = None if shape[0] is None else shape[0] // self.num_rois
        return (batch, self.num_rois, *shape[1:])

    def get_config(self) -> dict:
        return {**super().get_config(), "num_rois": self.num_rois}


def _bn(x: Any, name: str, train_bn: bool) -> Any:
    """BatchNorm over the ROI batch, frozen (inference mode) unless train_bn."""
    return BatchNorm(train_bn=train_bn, name=name)(x)


def fpn_classifier_graph(
    rois: Any,
    feature_maps: list[Any],
    image_shape: tuple[int, int],
    pool_size: int,
    num_classes: int,
    train_bn: bool = True,
    fc_layers_size: int = 1024,
) -> tuple[Any, Any, Any]:
    """Classifier and box regression head.

    rois: [B, N, (y1, x1, y2, x2)] normalized; feature_maps: [P2, P3, P4, P5].
    Returns mrcnn_class_logits [B, N, num_classes], mrcnn_probs [B, N, num_classes],
    mrcnn_bbox [B, N, num_classes, (dy, dx, log dh, log dw)].
    """
    num_rois = rois.shape[1]
    x = PyramidROIAlign((pool_size, pool_size), image_shape, name="roi_align_classifier")(
        rois, feature_maps
    )  # [B*N, pool, pool, C]
    # Two 1024-wide "fully connected" layers written as convolutions (as Matterport).
    x = layers.Conv2D(fc_layers_size, pool_size, padding="valid", kernel_initializer="he_normal",
                      name="mrcnn_class_conv1")(x)
    x = layers.Activation("relu", name="mrcnn_class_relu1")(_bn(x, "mrcnn_class_bn1", train_bn))
    x = layers.Conv2D(fc_layers_size, 1, kernel_initializer="he_normal",
                      name="mrcnn_class_conv2")(x)
    x = layers.Activation("relu", name="mrcnn_class_relu2")(_bn(x, "mrcnn_class_bn2", train_bn))
    shared = layers.Reshape((fc_layers_size,), name="pool_squeeze")(x)  # [B*N, fc]

    # Small output initialisations (torchvision's): near-uniform classes, near-zero deltas.
    logits = layers.Dense(num_classes, kernel_initializer=initializers.RandomNormal(stddev=0.01),
                          name="mrcnn_class_logits")(shared)
    mrcnn_class_logits = UnfoldRois(num_rois, name="mrcnn_class_logits_unfold")(logits)
    mrcnn_probs = layers.Activation("softmax", name="mrcnn_class")(mrcnn_class_logits)
    x = layers.Dense(num_classes * 4, kernel_initializer=initializers.RandomNormal(stddev=0.001),
                     name="mrcnn_bbox_fc")(shared)  # [B*N, classes*4]
    x = UnfoldRois(num_rois, name="mrcnn_bbox_unfold")(x)
    mrcnn_bbox = layers.Reshape((num_rois, num_classes, 4), name="mrcnn_bbox")(x)
    return mrcnn_class_logits, mrcnn_probs, mrcnn_bbox


def build_fpn_mask_graph(
    rois: Any,
    feature_maps: list[Any],
    image_shape: tuple[int, int],
    pool_size: int,
    num_classes: int,
    train_bn: bool = True,
    conv_size: int = 256,
) -> Any:
    """Mask head: four 3x3 convolutions, a 2x deconvolution and a per-class sigmoid.

    rois: [B, N, 4] normalized; returns masks [B, N, 2*pool_size, 2*pool_size, num_classes].
    """
    num_rois = rois.shape[1]
    x = PyramidROIAlign((pool_size, pool_size), image_shape, name="roi_align_mask")(
        rois, feature_maps
    )  # [B*N, pool, pool, C]
    for i in range(1, 5):
        x = layers.Conv2D(conv_size, 3, padding="same", kernel_initializer="he_normal",
                          name=f"mrcnn_mask_conv{i}")(x)
        x = layers.Activation("relu", name=f"mrcnn_mask_relu{i}")(
            _bn(x, f"mrcnn_mask_bn{i}", train_bn))
    x = layers.Conv2DTranspose(conv_size, 2, strides=2, activation="relu",
                               kernel_initializer="he_normal", name="mrcnn_mask_deconv")(x)
    x = layers.Conv2D(num_classes, 1, activation="sigmoid", name="mrcnn_mask")(x)
    return UnfoldRois(num_rois, name="mrcnn_mask_unfold")(x)
