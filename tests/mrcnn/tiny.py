"""Tiny model configurations and inputs shared by the model tests (64 px images, fast)."""

from __future__ import annotations

import numpy as np

from mrcnn import boxes
from mrcnn.config import Config


def tiny_config(**overrides) -> Config:
    """A ResNet-18 (quarter width) Mask R-CNN on 64x64 images, batch 2, 3 classes + BG."""
    fields = dict(
        NAME="tiny", IMAGES_PER_GPU=2, NUM_CLASSES=4, BACKBONE="resnet18", BACKBONE_WIDTH=0.25,
        TOP_DOWN_PYRAMID_SIZE=32, FPN_CLASSIF_FC_LAYERS_SIZE=64, MASK_HEAD_CONV_SIZE=32,
        IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64, RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128),
        RPN_TRAIN_ANCHORS_PER_IMAGE=32, PRE_NMS_LIMIT=200, POST_NMS_ROIS_TRAINING=64,
        POST_NMS_ROIS_INFERENCE=32, TRAIN_ROIS_PER_IMAGE=16, MAX_GT_INSTANCES=4,
        MINI_MASK_SHAPE=(14, 14), MASK_SHAPE=[28, 28], DETECTION_MAX_INSTANCES=8,
        DETECTION_MIN_CONFIDENCE=0.0, STEPS_PER_EPOCH=2, VALIDATION_STEPS=1,
    )
    fields.update(overrides)
    return Config(**fields)


def training_batch(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed, valid training batch: two squares per image with their masks and RPN targets."""
    rng = np.random.default_rng(seed)
    batch, size = config.BATCH_SIZE, int(config.IMAGE_SHAPE[0])
    anchors = boxes.denorm_boxes(boxes.get_anchors(config, (size, size)), (size, size))
    max_gt, mini = config.MAX_GT_INSTANCES, tuple(config.MINI_MASK_SHAPE)
    images = rng.normal(0, 10, (batch, size, size, 3)).astype(np.float32)
    gt_boxes = np.zeros((batch, max_gt, 4), np.float32)
    class_ids = np.zeros((batch, max_gt), np.int32)
    masks = np.zeros((batch, *mini, max_gt), bool)
    rpn_match = np.zeros((batch, anchors.shape[0], 1), np.int32)
    rpn_bbox = np.zeros((batch, config.RPN_TRAIN_ANCHORS_PER_IMAGE, 4), np.float32)
    for b in range(batch):
        placed = [(4, 4, 28, 28), (30, 34, 58, 60)]
        for i, (y1, x1, y2, x2) in enumerate(placed):
            images[b, y1:y2, x1:x2] += 100.0 * (i + 1)
            gt_boxes[b, i] = (y1, x1, y2, x2)
            class_ids[b, i] = i + 1
            masks[b, :, :, i] = True
        overlaps = boxes.compute_overlaps(anchors, gt_boxes[b, :2])
        best = overlaps.max(axis=1)
        rpn_match[b, best < 0.3, 0] = -1
        positive = np.where(best >= 0.5)[0][: config.RPN_TRAIN_ANCHORS_PER_IMAGE // 2]
        rpn_match[b, positive, 0] = 1
        negative = np.where(rpn_match[b, :, 0] == -1)[0]
        rpn_match[b, negative[config.RPN_TRAIN_ANCHORS_PER_IMAGE // 2:], 0] = 0
        gt_of = overlaps.argmax(axis=1)
        deltas = boxes.box_refinement(anchors[positive], gt_boxes[b, gt_of[positive]])
        rpn_bbox[b, : len(positive)] = deltas / config.RPN_BBOX_STD_DEV
    meta = np.zeros((batch, config.IMAGE_META_SIZE), np.float32)
    meta[:, 1:4] = meta[:, 4:7] = (size, size, 3)
    meta[:, 7:11] = (0, 0, size, size)
    meta[:, 11] = 1.0
    meta[:, 12:] = 1.0
    return {
        "input_image": images, "input_image_meta": meta, "input_rpn_match": rpn_match,
        "input_rpn_bbox": rpn_bbox, "input_gt_class_ids": class_ids, "input_gt_boxes": gt_boxes,
        "input_gt_masks": masks,
    }


def random_images(count: int, seed: int = 0, shape=(50, 70, 3)) -> list[np.ndarray]:
    """count random RGB uint8 images (an odd size, to exercise resizing and unmolding)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]
