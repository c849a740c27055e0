"""Test-time BatchNorm adaptation (AdaBN; Li et al., "Revisiting batch normalization for
practical domain adaptation", 2016): the trunk's normalisation statistics taken from the
images being segmented instead of from the training images.

Every trunk BatchNorm computes y = gamma * (x - mean) / sqrt(var + eps) + beta per channel,
with (mean, var) the moving averages of training. On images from another scanner (other
contrast, noise, field strength) the activations have other means and variances, so every
layer after the first is fed inputs off the scale it was trained for, and the error grows
with depth. AdaBN keeps gamma and beta (what was learnt) and re-estimates (mean, var) on the
test images: one trunk pass in training mode, where each BatchNorm normalises with the
statistics of the batch, so layer k's statistics are measured on inputs already normalised
by the adapted layers before it.

estimate_statistics makes that pass and returns the statistics without changing the model;
batchnorm_statistics swaps them in for a block (e.g. around detect) and puts the trained
ones back. The heads' BatchNorms (over ROIs, not images) keep their trained statistics.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import keras
import numpy as np

from mrcnn.backbone import BatchNorm

# The first FPN layer reads the trunk's last feature map (C5): the end of the trunk.
TRUNK_END_CONSUMER = "fpn_c5p5"

# One (mean [C], variance [C]) pair per trunk BatchNorm, in model order.
Statistics = list[tuple[np.ndarray, np.ndarray]]


def trunk_batchnorms(keras_model: keras.Model) -> list[BatchNorm]:
    """The BatchNorm layers of the ResNet trunk (bn_conv1, bn2a_branch2a, ...), not those of
    the heads (mrcnn_class_bn1, mrcnn_mask_bn1, ...), in model order."""
    return [
        layer for layer in keras_model.layers
        if isinstance(layer, BatchNorm) and not layer.name.startswith("mrcnn_")
    ]  # fmt: skip


# One trunk view per model, built on first use (building a functional model takes time).
_TRUNKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _trunk_model(keras_model: keras.Model) -> keras.Model:
    """input_image [N, H, W, 3] -> C5, a view sharing the model's layers and weights."""
    if keras_model not in _TRUNKS:
        c5 = keras_model.get_layer(TRUNK_END_CONSUMER).input
        _TRUNKS[keras_model] = keras.Model(keras_model.get_layer("input_image").output, c5)
    return _TRUNKS[keras_model]


def current_statistics(layers: list[BatchNorm]) -> Statistics:
    """The (moving mean, moving variance) each layer normalises with now (copies)."""
    return [
        (np.array(keras.ops.convert_to_numpy(layer.moving_mean)),
         np.array(keras.ops.convert_to_numpy(layer.moving_variance)))
        for layer in layers
    ]  # fmt: skip


def _assign(layers: list[BatchNorm], statistics: Statistics) -> None:
    for layer, (mean, variance) in zip(layers, statistics, strict=True):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)


def estimate_statistics(keras_model: keras.Model, molded_images: np.ndarray) -> Statistics:
    """Trunk BatchNorm statistics of molded_images [N, H, W, 3] (the network's input, as
    MaskRCNN.mold_inputs makes it), one pair per trunk_batchnorms layer. The model is left
    as it was.

    One trunk pass in training mode with momentum 0: Keras sets each moving average to
    momentum * old + (1 - momentum) * batch = the batch's mean and (biased) variance over
    N x H' x W' positions per channel, and normalises with them on the way, as AdaBN asks.
    """
    layers = trunk_batchnorms(keras_model)
    trained = current_statistics(layers)
    settings = [(layer.momentum, layer.train_bn) for layer in layers]
    try:
        for layer in layers:
            layer.momentum, layer.train_bn = 0.0, True  # train_bn False would ignore training
        _trunk_model(keras_model)(np.asarray(molded_images, np.float32), training=True)
        return current_statistics(layers)
    finally:
        for layer, (momentum, train_bn) in zip(layers, settings, strict=True):
            layer.momentum, layer.train_bn = momentum, train_bn
        _assign(layers, trained)


@contextmanager
def batchnorm_statistics(keras_model: keras.Model, statistics: Statistics | None) -> Iterator[None]:
    """Within the block the trunk normalises with `statistics` (estimate_statistics); the
    trained ones are back afterwards, whatever happens. None: the model as trained.

    Not thread-safe: callers that share a model hold their lock around the block."""
    if statistics is None:
        yield
        return
    layers = trunk_batchnorms(keras_model)
    trained = current_statistics(layers)
    _assign(layers, statistics)
    try:
        yield
    finally:
        _assign(layers, trained)
