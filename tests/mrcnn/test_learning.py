"""The learning test: Mask R-CNN trained from scratch on synthetic shapes, mask mAP@0.5 >= 0.8.

A light model (ResNet-18 at half width, 128 px images, small pyramid and heads) is trained
on the CPU with layers="all" and evaluated on 50 held-out images drawn with another seed.
It runs with Adam, a learning-rate warm-up and the GT boxes added to the proposals
(OPTIMIZER, LEARNING_RATE_WARMUP_STEPS, ADD_GT_TO_PROPOSALS in mrcnn/config.py).
"""

from __future__ import annotations

import logging
import time

import keras
import numpy as np
import pytest
from shapes import make_shapes

from mrcnn import metrics, utils
from mrcnn.config import Config
from mrcnn.model import MaskRCNN

logger = logging.getLogger(__name__)


class ShapesConfig(Config):
    """Light, fast settings for 128 px images with shapes of 16-40 px, trained with Adam."""

    NAME = "shapes"
    IMAGES_PER_GPU = 4
    NUM_CLASSES = 4  # background + square, circle, triangle
    BACKBONE = "resnet18"
    BACKBONE_WIDTH = 0.5
    TOP_DOWN_PYRAMID_SIZE = 64
    FPN_CLASSIF_FC_LAYERS_SIZE = 256
    MASK_HEAD_CONV_SIZE = 64
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 600
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32
    MASK_POOL_SIZE = 7
    MASK_SHAPE = [14, 14]
    MINI_MASK_SHAPE = (28, 28)
    MAX_GT_INSTANCES = 8
    DETECTION_MAX_INSTANCES = 16
    DETECTION_MIN_CONFIDENCE = 0.3
    TRAIN_BN = True
    # Adam + warm-up + GT boxes among the proposals learn from scratch several times faster
    # than Matterport's SGD (SGD 0.005: mAP 0.22 after 8 epochs; 0.02 killed the RPN).
    OPTIMIZER = "adam"
    LEARNING_RATE = 0.001
    LEARNING_RATE_WARMUP_STEPS = 100
    ADD_GT_TO_PROPOSALS = True
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 1


def mask_map(model: MaskRCNN, dataset, iou: float = 0.5) -> float:
    """Mean over images of mask AP at an IoU threshold (Matterport's compute_ap)."""
    ids = list(dataset.image_ids)
    images = [dataset.load_image(i) for i in ids]
    results = model.detect(images)
    aps = []
    for image_id, r in zip(ids, results, strict=True):
        gt_masks, gt_class_ids = dataset.load_mask(image_id)
        gt_boxes = utils.extract_bboxes(gt_masks)
        ap, *_ = metrics.compute_ap(gt_boxes, gt_class_ids, gt_masks, r["rois"],
                                    r["class_ids"], r["scores"], r["masks"],
                                    iou_threshold=iou)
        aps.append(ap)
    return float(np.mean(aps))


def train_and_evaluate(tmp_path, epochs: int, fine_epochs: int = 2, config: Config | None = None
                       ) -> tuple[float, float]:
    """Train from scratch for epochs x STEPS_PER_EPOCH steps; return (mask mAP@0.5, seconds)."""
    config = config or ShapesConfig()
    keras.utils.set_random_seed(0)  # initial weights and ROI sampling: a reproducible run
    train_set = make_shapes(500, seed=1, min_size=16, max_size=40)
    val_set = make_shapes(50, seed=2, min_size=16, max_size=40)
    start = time.time()
    model = MaskRCNN("training", config, tmp_path)
    # Matterport's schedule shape: most epochs at the base rate, the last ones 10x lower.
    model.train(train_set, None, learning_rate=config.LEARNING_RATE, epochs=epochs - fine_epochs,
                layers="all")
    model.train(train_set, None, learning_rate=config.LEARNING_RATE / 10, epochs=epochs,
                layers="all")
    trained = model.find_last()
    seconds = time.time() - start
    inference = MaskRCNN("inference", config, tmp_path)
    inference.load_weights(trained)
    score = mask_map(inference, val_set)
    logger.info("shapes learning test: mask mAP@0.5 %.3f after %.0f s", score, seconds)
    return score, seconds


@pytest.mark.slow
def test_shapes_from_scratch_reach_mask_map_08(tmp_path):
    """6 epochs x 100 steps (4 at 1e-3, 2 at 1e-4). Measured on 2 CPU cores shared with other
    jobs: mask mAP@0.5 0.981 and 0.991 (two runs, ~600 s of training each under heavy load;
    epochs take ~40 s on a quieter machine, so ~4.5 min), 0.975 with another seed, 0.99
    after 8 epochs. Before (SGD 0.005, no GT boxes among the proposals, Keras default init):
    0.22 after 8 epochs, 0.59 after 12.
    """
    score, seconds = train_and_evaluate(tmp_path, epochs=6)
    assert score >= 0.8, f"mask mAP@0.5 {score:.3f} after {seconds:.0f} s of training"
