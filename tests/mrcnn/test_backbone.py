"""Backbone: ResNet trunks with Matterport's layer names and the FPN's shapes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from tiny import tiny_config

from mrcnn.backbone import backbone_model, resnet_graph, scaled


def test_resnet50_has_matterport_layer_names_and_fpn_shapes():
    model = backbone_model(tiny_config(BACKBONE="resnet50", BACKBONE_WIDTH=1.0,
                                       TOP_DOWN_PYRAMID_SIZE=256))
    names = {layer.name for layer in model.layers}
    expected = {"conv1", "bn_conv1", "res2a_branch2a", "bn2a_branch2a", "res2a_branch1",
                "bn2a_branch1", "res2c_branch2c", "res3d_branch2c", "res4f_branch2c",
                "res5c_branch2c", "bn5c_branch2c", "fpn_c5p5", "fpn_c4p4", "fpn_c3p3",
                "fpn_c2p2", "fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6"}
    assert expected <= names
    assert "res4g_branch2a" not in names  # resnet50 stage 4 stops at block f
    assert model.get_layer("res5a_branch2c").kernel.shape == (1, 1, 512, 2048)
    assert [tuple(o.shape[1:]) for o in model.outputs] == [
        (16, 16, 256), (8, 8, 256), (4, 4, 256), (2, 2, 256), (1, 1, 256)]


def test_resnet101_stage4_has_23_blocks_named_a_to_w():
    image = keras.Input((64, 64, 3))
    resnet_graph(image, "resnet101", train_bn=False)
    model = keras.Model(image, resnet_graph(image, "resnet101", train_bn=False)[-1])
    names = {layer.name for layer in model.layers}
    assert "res4w_branch2c" in names and "res4x_branch2c" not in names


def test_resnet18_half_width_channels_and_strides():
    image = keras.Input((64, 64, 3))
    c1, c2, c3, c4, c5 = resnet_graph(image, "resnet18", width=0.5)
    assert [tuple(c.shape[1:]) for c in (c2, c3, c4, c5)] == [
        (16, 16, 32), (8, 8, 64), (4, 4, 128), (2, 2, 256)]
    model = keras.Model(image, c5)
    assert "res2b_branch2b" in {layer.name for layer in model.layers}
    assert "res2a_branch2c" not in {layer.name for layer in model.layers}  # basic blocks


def test_scaled_widths_are_multiples_of_8_and_at_least_8():
    assert scaled(64, 1.0) == 64
    assert scaled(64, 0.5) == 32
    assert scaled(64, 0.1) == 8
    assert scaled(100, 0.5) == 48


def test_frozen_batchnorm_ignores_training_flag():
    model = backbone_model(tiny_config(TRAIN_BN=False))
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    a = keras.ops.convert_to_numpy(model(x, training=True)[0])
    b = keras.ops.convert_to_numpy(model(x, training=False)[0])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_unknown_backbone_is_rejected():
    with pytest.raises(ValueError, match="unknown backbone"):
        resnet_graph(keras.Input((64, 64, 3)), "resnet7")
