"""MaskRCNN: graph shapes, trainable layers, a learning training step, detect, checkpoints."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from shapes import make_shapes
from tiny import random_images, tiny_config, training_batch

from mrcnn.model import MaskRCNN, build_model


@pytest.fixture(scope="module")
def config():
    return tiny_config()


def test_training_graph_output_shapes(config):
    model = build_model(config, "training")
    out = model(training_batch(config), training=False)
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    anchors = (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1) * 3
    assert shapes["rpn_class_logits"] == (2, anchors, 2)
    assert shapes["rpn_bbox"] == (2, anchors, 4)
    assert shapes["rpn_rois"] == (2, 64, 4)
    assert shapes["output_rois"] == (2, 16, 4)
    assert shapes["target_class_ids"] == (2, 16)
    assert shapes["target_mask"] == (2, 16, 28, 28)
    assert shapes["mrcnn_class_logits"] == (2, 16, 4)
    assert shapes["mrcnn_bbox"] == (2, 16, 4, 4)
    assert shapes["mrcnn_mask"] == (2, 16, 28, 28, 4)


def test_inference_graph_output_shapes(config):
    model = build_model(config, "inference")
    batch = training_batch(config)
    out = model({k: batch[k] for k in ("input_image", "input_image_meta")})
    assert tuple(out["detections"].shape) == (2, 8, 6 + 4)  # + the 4 class probabilities
    assert tuple(out["mrcnn_mask"].shape) == (2, 8, 28, 28, 4)
    assert tuple(out["mrcnn_class"].shape) == (2, 32, 4)


@pytest.mark.parametrize("channels, expected", [(None, 64), (32, 32)])
def test_rpn_shared_conv_width_defaults_to_twice_the_fpn_width(channels, expected):
    # None: Matterport's layout (2 x TOP_DOWN_PYRAMID_SIZE = 64 here); an int: torchvision's
    # style, as wide as the FPN.
    model = build_model(tiny_config(RPN_CONV_SHARED_CHANNELS=channels), "inference")
    kernel = model.get_layer("rpn_model").get_layer("rpn_conv_shared").kernel
    assert tuple(kernel.shape) == (3, 3, 32, expected)


def _weights(model, names):
    return {n: [keras.ops.convert_to_numpy(w).copy() for w in model.get_layer(n).weights]
            for n in names}


def test_heads_training_leaves_the_backbone_unchanged(config, tmp_path):
    mrcnn = MaskRCNN("training", config, tmp_path)
    mrcnn.set_trainable("heads")
    mrcnn.compile(0.01, 0.9)
    backbone = ["conv1", "bn_conv1", "res2a_branch2a", "res5b_branch2b", "bn5b_branch2b"]
    heads = ["fpn_c5p5", "fpn_p2", "mrcnn_class_logits", "rpn_model"]
    before = _weights(mrcnn.keras_model, backbone + heads)
    mrcnn.keras_model.train_on_batch(training_batch(config))
    after = _weights(mrcnn.keras_model, backbone + heads)
    for name in backbone:
        for a, b in zip(before[name], after[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
    for name in heads:
        pairs = zip(before[name], after[name], strict=True)
        assert any(not np.array_equal(a, b) for a, b in pairs), name


@pytest.mark.slow  # trains (~50 s on the 2-core CPU)
def test_training_steps_reduce_the_loss_on_a_fixed_batch(config, tmp_path):
    keras.utils.set_random_seed(0)
    mrcnn = MaskRCNN("training", config, tmp_path)
    mrcnn.set_trainable("all")
    mrcnn.compile(0.01, 0.9)
    batch = training_batch(config)
    logs = [mrcnn.keras_model.train_on_batch(batch, return_dict=True) for _ in range(10)]
    assert set(logs[0]) >= {"loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
                            "mrcnn_bbox_loss", "mrcnn_mask_loss"}
    first = logs[0]["rpn_class_loss"] + logs[0]["rpn_bbox_loss"]
    last = logs[-1]["rpn_class_loss"] + logs[-1]["rpn_bbox_loss"]
    assert last < 0.7 * first
    assert np.isfinite(logs[-1]["loss"])


def test_detect_returns_one_result_per_image_at_its_original_size(config, tmp_path):
    mrcnn = MaskRCNN("inference", config, tmp_path)
    images = random_images(3) + [np.zeros((80, 40, 3), np.uint8)]
    results = mrcnn.detect(images)  # batch 2: two full batches; a 3-image call pads one
    assert len(results) == 4
    for image, r in zip(images, results, strict=True):
        n = len(r["class_ids"])
        assert r["rois"].shape == (n, 4) and r["rois"].dtype == np.int32
        assert r["scores"].shape == (n,) and r["class_ids"].dtype == np.int32
        assert r["masks"].shape == (*image.shape[:2], n) and r["masks"].dtype == bool
        assert r["class_probs"].shape == (n, config.NUM_CLASSES)
        np.testing.assert_allclose(r["class_probs"].sum(axis=1), 1.0, atol=1e-5)
        named = r["class_probs"][np.arange(n), r["class_ids"]]
        np.testing.assert_allclose(named, r["scores"], atol=1e-6)  # Matterport scoring
    assert len(mrcnn.detect(images[:3])) == 3


def test_foreground_scoring_scores_the_object_and_keeps_the_class_probability(tmp_path):
    # The graph's detection layer scores objects (refine_detections' tests hold the math);
    # the score is then 1 - P(background).
    config = tiny_config(DETECTION_SCORE="foreground")
    mrcnn = MaskRCNN("inference", config, tmp_path)
    assert mrcnn.keras_model.get_layer("mrcnn_detection").score == "foreground"
    for r in mrcnn.detect(random_images(2)):
        assert len(r["scores"]) > 0 and (r["class_ids"] > 0).all()
        np.testing.assert_allclose(r["scores"], 1.0 - r["class_probs"][:, 0], atol=1e-6)
    with pytest.raises(ValueError, match="DETECTION_SCORE"):
        tiny_config(DETECTION_SCORE="max")


def test_detect_needs_inference_mode(config, tmp_path):
    with pytest.raises(ValueError, match="inference"):
        MaskRCNN("training", config, tmp_path).detect(random_images(1))


@pytest.mark.slow  # trains (~65 s on the 2-core CPU)
def test_train_writes_a_checkpoint_per_epoch_and_find_last_resumes(tmp_path):
    config = tiny_config(STEPS_PER_EPOCH=2)
    data = make_shapes(6, seed=0, size=64, max_size=24)
    mrcnn = MaskRCNN("training", config, tmp_path)
    mrcnn.train(data, data, learning_rate=0.001, epochs=2, layers="heads")
    files = sorted(os.listdir(mrcnn.log_dir))
    assert "mask_rcnn_tiny_0001.weights.h5" in files and "mask_rcnn_tiny_0002.weights.h5" in files
    assert "history.csv" in files
    assert not [f for f in files if f.startswith(".tmp")]
    assert mrcnn.epoch == 2
    last = mrcnn.find_last()
    assert last.endswith("mask_rcnn_tiny_0002.weights.h5")
    resumed = MaskRCNN("training", config, tmp_path)
    resumed.load_weights(last, by_name=True)
    assert resumed.epoch == 2 and resumed.log_dir == mrcnn.log_dir
    resumed.train(data, None, learning_rate=0.001, epochs=3, layers="heads")
    assert resumed.find_last().endswith("mask_rcnn_tiny_0003.weights.h5")


def test_set_log_dir_parses_matterport_checkpoint_names(config, tmp_path):
    mrcnn = MaskRCNN("inference", config, tmp_path)
    mrcnn.set_log_dir(os.path.join(tmp_path, "tiny20240131T0959", "mask_rcnn_tiny_0007.h5"))
    assert mrcnn.epoch == 7 and mrcnn.log_dir.endswith("tiny20240131T0959")
    assert mrcnn.checkpoint_path.endswith("mask_rcnn_tiny_{epoch:04d}.weights.h5")


def test_find_last_without_checkpoints_raises(config, tmp_path):
    with pytest.raises(FileNotFoundError):
        MaskRCNN("inference", config, tmp_path).find_last()


def test_unknown_mode_is_rejected(config, tmp_path):
    with pytest.raises(ValueError, match="mode"):
        MaskRCNN("eval", config, tmp_path)


@pytest.mark.parametrize("name, cls", [("sgd", "SGD"), ("adam", "Adam"), ("adamw", "AdamW")])
def test_config_optimizer_selects_the_optimizer(name, cls):
    from mrcnn.model import build_optimizer

    optimizer = build_optimizer(tiny_config(OPTIMIZER=name), 0.01)
    assert type(optimizer).__name__ == cls
    assert optimizer.clipnorm == 5.0


def test_unknown_optimizer_is_rejected():
    from mrcnn.model import build_optimizer

    with pytest.raises(ValueError, match="OPTIMIZER"):
        build_optimizer(tiny_config(OPTIMIZER="rmsprop"), 0.01)


def test_warmup_ramps_the_learning_rate_linearly_then_holds_it():
    from mrcnn.model import build_optimizer

    optimizer = build_optimizer(tiny_config(LEARNING_RATE_WARMUP_STEPS=10), 0.02)
    rates = []
    for step in (0, 4, 9, 50):
        optimizer.iterations.assign(step)
        rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    np.testing.assert_allclose(rates, [0.002, 0.01, 0.02, 0.02], rtol=1e-6)


def test_adamw_moves_weight_decay_out_of_the_loss(config, tmp_path):
    mrcnn = MaskRCNN("training", tiny_config(OPTIMIZER="adamw"), tmp_path)
    mrcnn.compile(0.001, 0.9)
    assert mrcnn.keras_model.weight_decay == 0.0
    assert mrcnn.keras_model.optimizer.weight_decay == pytest.approx(1e-4)


@pytest.mark.slow  # trains (~100 s on the 2-core CPU)
def test_adam_training_steps_reduce_the_loss_on_a_fixed_batch(tmp_path):
    keras.utils.set_random_seed(0)
    config = tiny_config(OPTIMIZER="adam", LEARNING_RATE_WARMUP_STEPS=3)
    mrcnn = MaskRCNN("training", config, tmp_path)
    mrcnn.set_trainable("all")
    mrcnn.compile(0.001, 0.9)
    batch = training_batch(config)
    logs = [mrcnn.keras_model.train_on_batch(batch, return_dict=True) for _ in range(10)]
    assert logs[-1]["loss"] < 0.7 * logs[0]["loss"]


def test_gt_boxes_in_proposals_give_the_heads_positive_rois(tmp_path):
    batch = training_batch(tiny_config())
    counts = {}
    for add in (False, True):
        keras.utils.set_random_seed(0)
        model = build_model(tiny_config(ADD_GT_TO_PROPOSALS=add), "training")
        out = model(batch, training=False)
        counts[add] = int(np.sum(keras.ops.convert_to_numpy(out["target_class_ids"]) > 0))
    # An untrained RPN proposes little that overlaps the squares; the GT boxes always do.
    assert counts[True] >= 4 and counts[True] > counts[False]
