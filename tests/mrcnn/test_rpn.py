"""RPN head and proposal layer."""

from __future__ import annotations

import keras
import numpy as np
from tiny import tiny_config

from mrcnn import boxes
from mrcnn.rpn import ProposalLayer, build_rpn_model, gather_padded


def test_rpn_model_names_and_output_shapes():
    rpn = build_rpn_model(anchor_stride=1, anchors_per_location=3, depth=16, shared_channels=32)
    assert rpn.name == "rpn_model"
    assert {"rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred"} <= {l.name for l in rpn.layers}
    logits, probs, bbox = rpn(np.zeros((2, 4, 5, 16), "float32"))
    assert tuple(logits.shape) == (2, 60, 2) and tuple(probs.shape) == (2, 60, 2)
    assert tuple(bbox.shape) == (2, 60, 4)


def _layer(count=5, threshold=0.7, config=None, **kwargs):
    config = config or tiny_config()
    return ProposalLayer(proposal_count=count, nms_threshold=threshold, pre_nms_limit=50,
                         rpn_bbox_std_dev=(0.1, 0.1, 0.2, 0.2), image_shape=(64, 64),
                         anchor_scales=config.RPN_ANCHOR_SCALES,
                         anchor_ratios=config.RPN_ANCHOR_RATIOS,
                         backbone_strides=config.BACKBONE_STRIDES,
                         anchor_stride=config.RPN_ANCHOR_STRIDE, batch_size=2, **kwargs)


def test_proposal_layer_anchors_are_get_anchors():
    config = tiny_config()
    anchors = _layer(config=config).anchors
    np.testing.assert_array_equal(anchors, boxes.get_anchors(config, (64, 64)))
    assert anchors.shape == ((16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1) * 3, 4)


def test_proposal_layer_follows_a_custom_backbones_feature_shapes():
    """A callable BACKBONE with COMPUTE_BACKBONE_SHAPE (valid padding: smaller maps than
    image / stride): the layer's anchors follow the shapes the model builder passes."""
    shapes = np.array([[15, 15], [7, 7], [3, 3], [1, 1], [1, 1]])
    config = tiny_config().replace(BACKBONE=lambda *a, **k: None,
                                   COMPUTE_BACKBONE_SHAPE=lambda image_shape: shapes)
    layer = _layer(config=config, feature_shapes=boxes.compute_backbone_shapes(config, (64, 64)))
    assert layer.anchors.shape == ((225 + 49 + 9 + 1 + 1) * 3, 4)
    np.testing.assert_array_equal(layer.anchors, boxes.get_anchors(config, (64, 64)))
    assert ProposalLayer.from_config(layer.get_config()).anchors.shape == layer.anchors.shape


def test_proposals_are_top_scored_anchors_refined_clipped_and_zero_padded():
    layer = _layer(count=5)
    anchors = layer.anchors
    num = anchors.shape[0]
    probs = np.zeros((2, num, 2), np.float32)
    probs[..., 0] = 1.0
    best = 3 * (5 * 16 + 6)  # an anchor well inside the image
    probs[:, best] = (0.1, 0.9)
    deltas = np.zeros((2, num, 4), np.float32)
    deltas[:, best] = (1.0, 0.0, 0.0, 0.0)  # shift down by 0.1 of the height
    out = keras.ops.convert_to_numpy(layer(probs, deltas))
    assert out.shape == (2, 5, 4)
    expected = boxes.apply_box_deltas_np(anchors[best:best + 1], np.array([[0.1, 0, 0, 0]]))
    np.testing.assert_allclose(out[0, 0], np.clip(expected[0], 0, 1), atol=1e-5)
    # All other anchors score 0: NMS still keeps non-overlapping ones; everything in [0, 1].
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_nms_suppresses_overlapping_proposals_and_pads_with_zeros():
    layer = _layer(count=40, threshold=0.5)
    num = layer.anchors.shape[0]
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=(2, num)).astype(np.float32)
    probs = np.stack([1 - scores, scores], -1)
    out = keras.ops.convert_to_numpy(layer(probs, np.zeros((2, num, 4), np.float32)))
    kept = out[0][np.abs(out[0]).sum(1) > 0]
    iou = boxes.compute_overlaps(kept, kept)
    np.fill_diagonal(iou, 0)
    assert iou.max() <= 0.5 + 1e-6
    assert 0 < len(kept) <= 40


def test_gather_padded_zeros_the_padding():
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = keras.ops.convert_to_numpy(gather_padded(values, np.array([2, 0, -1], np.int32)))
    np.testing.assert_array_equal(out, [[6, 7, 8], [0, 1, 2], [0, 0, 0]])
