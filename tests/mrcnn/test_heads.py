"""Classifier/box head and mask head: shapes and Matterport layer names."""

from __future__ import annotations

import keras
import numpy as np

from mrcnn.heads import build_fpn_mask_graph, fpn_classifier_graph


def _inputs(batch=2, rois=5, depth=16):
    rois_in = keras.Input((rois, 4), batch_size=batch)
    maps = [keras.Input((s, s, depth), batch_size=batch) for s in (16, 8, 4, 2)]
    return rois_in, maps


def test_classifier_head_shapes_and_names():
    rois, maps = _inputs()
    logits, probs, bbox = fpn_classifier_graph(rois, maps, (64, 64), pool_size=7,
                                               num_classes=3, fc_layers_size=32)
    model = keras.Model([rois, *maps], [logits, probs, bbox])
    names = {layer.name for layer in model.layers}
    assert {"mrcnn_class_conv1", "mrcnn_class_bn1", "mrcnn_class_conv2", "mrcnn_class_bn2",
            "mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox"} <= names
    assert model.get_layer("mrcnn_class_conv1").kernel.shape == (7, 7, 16, 32)
    rng = np.random.default_rng(0)
    boxes = np.tile(np.array([0.1, 0.1, 0.6, 0.7], np.float32), (2, 5, 1))
    out = model([boxes, *[rng.normal(size=m.shape).astype("float32") for m in maps]])
    assert [tuple(o.shape) for o in out] == [(2, 5, 3), (2, 5, 3), (2, 5, 3, 4)]
    np.testing.assert_allclose(np.sum(keras.ops.convert_to_numpy(out[1]), -1), 1.0, atol=1e-5)


def test_mask_head_shapes_names_and_sigmoid_range():
    rois, maps = _inputs()
    masks = build_fpn_mask_graph(rois, maps, (64, 64), pool_size=14, num_classes=3,
                                 conv_size=8)
    model = keras.Model([rois, *maps], masks)
    names = {layer.name for layer in model.layers}
    assert {f"mrcnn_mask_conv{i}" for i in range(1, 5)} <= names
    assert {f"mrcnn_mask_bn{i}" for i in range(1, 5)} | {"mrcnn_mask_deconv", "mrcnn_mask"} <= names
    boxes = np.tile(np.array([0.2, 0.2, 0.5, 0.5], np.float32), (2, 5, 1))
    rng = np.random.default_rng(0)
    inputs = [boxes, *[rng.normal(size=m.shape).astype("float32") for m in maps]]
    out = keras.ops.convert_to_numpy(model(inputs))
    assert out.shape == (2, 5, 28, 28, 3)
    # Each class channel is an independent sigmoid of the last 1x1 convolution: with a
    # zero kernel every pixel of class k is sigmoid(bias_k) (a softmax would make them 1/3).
    last = model.get_layer("mrcnn_mask")
    kernel, bias = last.get_weights()
    last.set_weights([np.zeros_like(kernel), np.array([-3.0, 0.0, 3.0], np.float32)])
    flat = keras.ops.convert_to_numpy(model(inputs))
    np.testing.assert_allclose(flat, np.broadcast_to(1 / (1 + np.exp([3.0, 0.0, -3.0])),
                                                     flat.shape), rtol=1e-6)  # fmt: skip
    # With its weights back the output is sigmoid(features @ kernel + bias), pixel by pixel.
    last.set_weights([kernel, bias])
    features = keras.Model(model.inputs, model.get_layer("mrcnn_mask_deconv").output)
    f = keras.ops.convert_to_numpy(features(inputs))  # [B * N, 28, 28, conv_size]
    expected = 1 / (1 + np.exp(-(f @ kernel[0, 0] + bias)))
    np.testing.assert_allclose(out, expected.reshape(out.shape), rtol=1e-4, atol=1e-6)
