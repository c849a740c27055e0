"""Test-time BatchNorm adaptation (mrcnn.adapt): which layers, what statistics, nothing left
changed, and the property it exists for (a scan's global gain and offset no longer matter)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from tiny import tiny_config

from mrcnn import adapt
from mrcnn.model import MaskRCNN


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    keras.utils.set_random_seed(0)
    net = MaskRCNN("inference", tiny_config(IMAGES_PER_GPU=1), str(tmp_path_factory.mktemp("m")))
    # Trained-looking statistics, far from any batch's, so that a swap is visible.
    for layer in adapt.trunk_batchnorms(net.keras_model):
        size = layer.moving_mean.shape[0]
        layer.moving_mean.assign(np.full(size, 3.0, np.float32))
        layer.moving_variance.assign(np.full(size, 5.0, np.float32))
    return net


def molded(count: int, seed: int = 0, gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """[count, 64, 64, 3] network inputs: smooth blobs plus noise, optionally rescaled."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    images = []
    for _ in range(count):
        cy, cx = rng.uniform(16, 48, 2)
        blob = 80.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 150.0)
        images.append(blob[..., None] + rng.normal(0, 10, (64, 64, 3)))
    return (gain * np.stack(images) + offset).astype(np.float32)


def trunk_output(net: MaskRCNN, images: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(adapt._trunk_model(net.keras_model)(images, training=False))


def test_the_trunk_batchnorms_are_adapted_and_the_heads_are_not(model):
    names = [layer.name for layer in adapt.trunk_batchnorms(model.keras_model)]
    assert names[0] == "bn_conv1" and "bn2a_branch2a" in names
    assert len(names) == 1 + 8 * 2 + 3  # stem, two convs per basic block, three shortcuts
    assert not [n for n in names if n.startswith("mrcnn_")]


def test_the_first_statistics_are_the_batch_moments_of_conv1(model):
    images = molded(3)
    stats = adapt.estimate_statistics(model.keras_model, images)
    conv1 = keras.Model(
        model.keras_model.get_layer("input_image").output,
        model.keras_model.get_layer("conv1").output,
    )
    x = keras.ops.convert_to_numpy(conv1(images))  # [3, 32, 32, C]
    np.testing.assert_allclose(stats[0][0], x.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats[0][1], x.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-4)


def test_estimating_leaves_the_model_as_it_was(model):
    layers = adapt.trunk_batchnorms(model.keras_model)
    before = adapt.current_statistics(layers)
    settings = [(layer.momentum, layer.train_bn) for layer in layers]
    images = molded(2)
    reference = trunk_output(model, images)
    adapt.estimate_statistics(model.keras_model, images)
    for (m0, v0), (m1, v1) in zip(before, adapt.current_statistics(layers), strict=True):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(v0, v1)
    assert [(layer.momentum, layer.train_bn) for layer in layers] == settings
    np.testing.assert_array_equal(trunk_output(model, images), reference)


def test_statistics_are_swapped_in_for_the_block_and_back_after_an_error(model):
    layers = adapt.trunk_batchnorms(model.keras_model)
    stats = adapt.estimate_statistics(model.keras_model, molded(2))
    trained = adapt.current_statistics(layers)
    with pytest.raises(RuntimeError):
        with adapt.batchnorm_statistics(model.keras_model, stats):
            np.testing.assert_array_equal(adapt.current_statistics(layers)[5][0], stats[5][0])
            raise RuntimeError("detect failed")
    np.testing.assert_array_equal(adapt.current_statistics(layers)[5][0], trained[5][0])
    with adapt.batchnorm_statistics(model.keras_model, None):  # None: as trained
        np.testing.assert_array_equal(adapt.current_statistics(layers)[5][1], trained[5][1])


def test_adapted_features_ignore_the_scans_overall_brightness(model):
    # conv1 is linear (zero padding included), so a gain a > 0 on the input makes its output
    # a * conv(x) + bias per channel; statistics of the scan itself normalise that away,
    # and every later layer sees the same input. With the trained statistics it does not.
    # (An offset is not normalised away at the zero-padded borders.)
    images = molded(4, seed=1)
    brighter = molded(4, seed=1, gain=2.5)

    def features(batch, adapted):
        stats = adapt.estimate_statistics(model.keras_model, batch) if adapted else None
        with adapt.batchnorm_statistics(model.keras_model, stats):
            return trunk_output(model, batch)

    plain = np.abs(features(images, False) - features(brighter, False)).max()
    adapted = np.abs(features(images, True) - features(brighter, True)).max()
    scale = np.abs(features(images, True)).max()
    assert adapted < 1e-2 * scale
    assert plain > 0.3 * scale
