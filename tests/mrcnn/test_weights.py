"""Weights: by-name save/load across modes, Matterport's legacy .h5 layout, ImageNet lookup."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
from tiny import tiny_config

from mrcnn import weights as W
from mrcnn.model import MaskRCNN

COCO_EXCLUDE = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    config = tiny_config()
    folder = tmp_path_factory.mktemp("weights")
    return MaskRCNN("training", config, folder), MaskRCNN("inference", config, folder)


def _value(model, layer, index=0):
    return keras.ops.convert_to_numpy(model.keras_model.get_layer(layer).weights[index]).copy()


def test_training_checkpoint_loads_into_the_inference_graph(models, tmp_path):
    train, infer = models
    path = tmp_path / "ckpt.weights.h5"
    train.save_weights(path)
    assert not list(tmp_path.glob(".tmp*"))
    infer.load_weights(path)
    for layer in ("conv1", "bn_conv1", "fpn_p3", "mrcnn_mask", "mrcnn_bbox_fc"):
        np.testing.assert_array_equal(_value(train, layer), _value(infer, layer))
    np.testing.assert_array_equal(_value(train, "bn_conv1", 3), _value(infer, "bn_conv1", 3))
    rpn_t = train.keras_model.get_layer("rpn_model").weights
    rpn_i = infer.keras_model.get_layer("rpn_model").weights
    for a, b in zip(rpn_t, rpn_i, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def _write_legacy(path, layers, root_group=False):
    """A Keras-2 save_weights file: attrs layer_names / weight_names, datasets per weight."""
    with h5py.File(path, "w") as f:
        g = f.create_group("model_weights") if root_group else f
        g.attrs["layer_names"] = [name.encode() for name in layers]
        for name, arrays in layers.items():
            lg = g.create_group(name)
            names = [f"{name}/{wname}:0" for wname, _ in arrays]
            lg.attrs["weight_names"] = [n.encode() for n in names]
            for n, (_, value) in zip(names, arrays, strict=True):
                lg.create_dataset(n, data=value)


@pytest.mark.parametrize("root_group", [False, True])
def test_legacy_matterport_file_loads_by_name_and_excluded_layers_stay(models, tmp_path,
                                                                       root_group):
    _, infer = models
    model = infer.keras_model
    conv1 = model.get_layer("conv1")
    rng = np.random.default_rng(0)
    layers = {
        "conv1": [("kernel", rng.normal(size=conv1.kernel.shape).astype("float32")),
                  ("bias", np.full(conv1.bias.shape, 0.5, "float32"))],
        "bn_conv1": [(n, np.full(conv1.bias.shape, v, "float32"))
                     for n, v in (("gamma", 2.0), ("beta", 0.1), ("moving_mean", 0.3),
                                  ("moving_variance", 4.0))],
        "mrcnn_class_logits": [("kernel", np.ones((64, 81), "float32")),
                               ("bias", np.ones(81, "float32"))],
        "layer_only_in_coco": [("kernel", np.ones((3, 3), "float32"))],
    }
    path = tmp_path / "mask_rcnn_coco.h5"
    _write_legacy(path, layers, root_group)
    logits_before = _value(infer, "mrcnn_class_logits")
    report = W.load_weights(model, path, by_name=True, exclude=COCO_EXCLUDE)
    assert report["loaded"] == ["conv1", "bn_conv1"]
    assert set(report["skipped"]) == {"mrcnn_class_logits", "layer_only_in_coco"}
    np.testing.assert_array_equal(_value(infer, "conv1"), layers["conv1"][0][1])
    np.testing.assert_array_equal(_value(infer, "conv1", 1), 0.5)
    np.testing.assert_allclose(_value(infer, "bn_conv1", 2), 0.3)  # moving mean
    np.testing.assert_array_equal(_value(infer, "bn_conv1", 3), 4.0)  # moving variance
    np.testing.assert_array_equal(_value(infer, "mrcnn_class_logits"), logits_before)


def test_shape_mismatch_names_the_layer(models, tmp_path):
    _, infer = models
    path = tmp_path / "bad.h5"
    _write_legacy(path, {"mrcnn_class_logits": [("kernel", np.ones((64, 81), "float32")),
                                                ("bias", np.ones(81, "float32"))]})
    with pytest.raises(ValueError, match="mrcnn_class_logits.*81"):
        W.load_weights(infer.keras_model, path, by_name=True)


def test_strict_load_requires_every_layer(models, tmp_path):
    _, infer = models
    path = tmp_path / "partial.h5"
    _write_legacy(path, {"conv1": []})
    with pytest.raises(ValueError, match="lacks weights"):
        W.load_weights(infer.keras_model, path)


def test_missing_file_raises_file_not_found(models, tmp_path):
    with pytest.raises(FileNotFoundError):
        models[1].load_weights(tmp_path / "nope.h5")


def test_imagenet_weights_are_looked_up_locally_and_never_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        W.get_imagenet_weights("resnet50", weights_dir=tmp_path)
    target = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    target.write_bytes(b"")
    assert W.get_imagenet_weights("resnet50", weights_dir=tmp_path) == str(target)
