"""ResNet trunks (18/34/50/101) and the Feature Pyramid Network, with Matterport's layer names.

Layer names match Matterport's resnet_graph and FPN (conv1, bn_conv1, res2a_branch2a,
bn2a_branch2a, ..., fpn_c5p5, fpn_p2, ...) so mask_rcnn_coco.h5 loads by name. ResNet-18/34
use basic blocks (two 3x3 convolutions: branch2a, branch2b) under the same naming scheme.
BACKBONE_WIDTH multiplies every trunk width, for light and fast models.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

# Blocks per stage (2, 3, 4, 5) and whether the blocks are bottlenecks.
ARCHITECTURES: dict[str, tuple[tuple[int, int, int, int], bool]] = {
    "resnet18": ((2, 2, 2, 2), False),
    "resnet34": ((3, 4, 6, 3), False),
    "resnet50": ((3, 4, 6, 3), True),
    "resnet101": ((3, 4, 23, 3), True),
}


def scaled(channels: int, width: float) -> int:
    """Channel count scaled by the width multiplier (at least 8, a multiple of 8 when < 1)."""
    if width == 1.0:
        return int(channels)
    return max(8, int(round(channels * width / 8.0)) * 8)


class BatchNorm(layers.BatchNormalization):
    """BatchNormalization that always runs in inference mode when train_bn is False.

    Keras 3 functional models pass the outer call's `training` flag to every layer, so a
    `training=False` given while building the graph would not freeze the layer; this one
    decides for itself. Frozen statistics suit small batches (Matterport's TRAIN_BN=False).
    """

    def __init__(self, train_bn: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_bn = bool(train_bn)

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        return super().call(inputs, training=training if self.train_bn else False, mask=mask)

    def get_config(self) -> dict:
        return {**super().get_config(), "train_bn": self.train_bn}


def _batch_norm(x: Any, name: str, train_bn: bool, zero_gamma: bool = False) -> Any:
    """BatchNorm; train_bn=False runs it in inference mode always (frozen statistics).

    zero_gamma starts the last BatchNorm of a residual branch at gamma = 0, so each block
    starts as the identity (Goyal et al. 2017): faster, steadier training from scratch.
    """
    return BatchNorm(train_bn=train_bn, gamma_initializer="zeros" if zero_gamma else "ones",
                     name=name)(x)


def _conv(filters: int, kernel_size: int, name: str, **kwargs: Any) -> layers.Conv2D:
    """A trunk convolution with He-normal initialisation (it feeds BatchNorm + ReLU)."""
    return layers.Conv2D(filters, kernel_size, kernel_initializer="he_normal", name=name,
                         **kwargs)


def bottleneck_block(
    x: Any,
    filters: tuple[int, int, int],
    stage: int,
    block: str,
    strides: int = 1,
    shortcut_conv: bool = False,
    train_bn: bool = True,
) -> Any:
    """Matterport's conv_block / identity_block: 1x1 -> 3x3 -> 1x1 plus a shortcut.

    x: [B, H, W, C] -> [B, H / strides, W / strides, filters[2]].
    """
    conv_base = f"res{stage}{block}_branch"
    bn_base = f"bn{stage}{block}_branch"
    f1, f2, f3 = filters
    y = _conv(f1, 1, strides=strides, name=conv_base + "2a")(x)
    y = _batch_norm(y, bn_base + "2a", train_bn)
    y = layers.Activation("relu", name=conv_base + "2a_relu")(y)
    y = _conv(f2, 3, padding="same", name=conv_base + "2b")(y)
    y = _batch_norm(y, bn_base + "2b", train_bn)
    y = layers.Activation("relu", name=conv_base + "2b_relu")(y)
    y = _conv(f3, 1, name=conv_base + "2c")(y)
    y = _batch_norm(y, bn_base + "2c", train_bn, zero_gamma=True)
    return _add_shortcut(x, y, f3, stage, block, strides, shortcut_conv, train_bn)


def basic_block(
    x: Any,
    filters: int,
    stage: int,
    block: str,
    strides: int = 1,
    shortcut_conv: bool = False,
    train_bn: bool = True,
) -> Any:
    """ResNet-18/34 block: 3x3 -> 3x3 plus a shortcut. x: [B, H, W, C] -> [B, H/s, W/s, filters]."""
    conv_base = f"res{stage}{block}_branch"
    bn_base = f"bn{stage}{block}_branch"
    y = _conv(filters, 3, strides=strides, padding="same", name=conv_base + "2a")(x)
    y = _batch_norm(y, bn_base + "2a", train_bn)
    y = layers.Activation("relu", name=conv_base + "2a_relu")(y)
    y = _conv(filters, 3, padding="same", name=conv_base + "2b")(y)
    y = _batch_norm(y, bn_base + "2b", train_bn, zero_gamma=True)
    return _add_shortcut(x, y, filters, stage, block, strides, shortcut_conv, train_bn)


def _add_shortcut(
    x: Any, y: Any, filters: int, stage: int, block: str, strides: int, shortcut_conv: bool,
    train_bn: bool,
) -> Any:
    """relu(y + shortcut(x)); the shortcut is a strided 1x1 conv + BN when shapes change."""
    shortcut = x
    if shortcut_conv:
        shortcut = _conv(filters, 1, strides=strides, name=f"res{stage}{block}_branch1")(x)
        shortcut = _batch_norm(shortcut, f"bn{stage}{block}_branch1", train_bn)
    y = layers.Add(name=f"res{stage}{block}_add")([y, shortcut])
    return layers.Activation("relu", name=f"res{stage}{block}_out")(y)


def resnet_graph(
    input_image: Any, architecture: str, train_bn: bool = True, width: float = 1.0
) -> list[Any]:
    """ResNet trunk. input_image: [B, H, W, 3] -> [C1, C2, C3, C4, C5] at strides 2..32.

    Channels of C2..C5: 256/512/1024/2048 (bottleneck) or 64/128/256/512 (basic), times width.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {architecture!r}; use one of {sorted(ARCHITECTURES)}")
    counts, bottleneck = ARCHITECTURES[architecture]
    # Every layer is named explicitly: building the model inside the Streamlit app once gave
    # two layers the same automatic name ("activation"), a ValueError; the cause in Keras'
    # automatic naming was not pinned down, explicit names make the build independent of it.
    x = layers.ZeroPadding2D((3, 3), name="conv1_pad")(input_image)
    x = _conv(scaled(64, width), 7, strides=2, name="conv1")(x)
    x = layers.Activation("relu", name="conv1_relu")(_batch_norm(x, "bn_conv1", train_bn))
    c1 = x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    outputs = [c1]
    for stage, count in zip((2, 3, 4, 5), counts, strict=True):
        base = 64 * 2 ** (stage - 2)
        for i in range(count):
            # Matterport names resnet101's 22 stage-4 identity blocks b..w (chr(98 + i)).
            block = chr(97 + i)
            strides = 2 if (i == 0 and stage > 2) else 1
            if bottleneck:
                filters = (scaled(base, width), scaled(base, width), scaled(base * 4, width))
                x = bottleneck_block(x, filters, stage, block, strides, i == 0, train_bn)
            else:
                x = basic_block(
                    x, scaled(base, width), stage, block, strides, i == 0 and stage > 2, train_bn
                )
        outputs.append(x)
    return outputs


def fpn_graph(c_maps: list[Any], pyramid_size: int) -> list[Any]:
    """Top-down FPN. [C2, C3, C4, C5] -> [P2, P3, P4, P5, P6], each [B, h, w, pyramid_size]."""
    c2, c3, c4, c5 = c_maps
    p5 = layers.Conv2D(pyramid_size, 1, name="fpn_c5p5")(c5)
    p4 = layers.Add(name="fpn_p4add")(
        [
            layers.UpSampling2D(2, name="fpn_p5upsampled")(p5),
            layers.Conv2D(pyramid_size, 1, name="fpn_c4p4")(c4),
        ]
    )
    p3 = layers.Add(name="fpn_p3add")(
        [
            layers.UpSampling2D(2, name="fpn_p4upsampled")(p4),
            layers.Conv2D(pyramid_size, 1, name="fpn_c3p3")(c3),
        ]
    )
    p2 = layers.Add(name="fpn_p2add")(
        [
            layers.UpSampling2D(2, name="fpn_p3upsampled")(p3),
            layers.Conv2D(pyramid_size, 1, name="fpn_c2p2")(c2),
        ]
    )
    # 3x3 convolutions smooth the aliasing of the upsampled sums.
    p2 = layers.Conv2D(pyramid_size, 3, padding="same", name="fpn_p2")(p2)
    p3 = layers.Conv2D(pyramid_size, 3, padding="same", name="fpn_p3")(p3)
    p4 = layers.Conv2D(pyramid_size, 3, padding="same", name="fpn_p4")(p4)
    p5 = layers.Conv2D(pyramid_size, 3, padding="same", name="fpn_p5")(p5)
    # P6 only feeds the RPN (the largest anchors), as in the FPN paper.
    p6 = layers.MaxPooling2D(pool_size=1, strides=2, name="fpn_p6")(p5)
    return [p2, p3, p4, p5, p6]


def build_backbone(input_image: Any, config: Any) -> list[Any]:
    """Trunk + FPN for config.BACKBONE: input [B, H, W, 3] -> [P2, P3, P4, P5, P6].

    A callable BACKBONE (Matterport's extension point) returns [C1..C5] itself.
    """
    if callable(config.BACKBONE):
        c_maps = config.BACKBONE(input_image, stage5=True, train_bn=config.TRAIN_BN)
    else:
        c_maps = resnet_graph(
            input_image, config.BACKBONE, train_bn=config.TRAIN_BN, width=config.BACKBONE_WIDTH
        )
    return fpn_graph(list(c_maps[1:]), config.TOP_DOWN_PYRAMID_SIZE)


def backbone_model(config: Any) -> keras.Model:
    """A standalone trunk + FPN model (for tests and feature inspection)."""
    image = keras.Input(shape=tuple(int(s) for s in config.IMAGE_SHAPE), name="input_image")
    return keras.Model(image, build_backbone(image, config), name="backbone")
