"""mrcnn.data: ground-truth loading, RPN targets and the training batch sequence."""

import numpy as np
import pytest

from mrcnn import boxes as B
from mrcnn import utils as U
from mrcnn.config import Config
from mrcnn.data import DataSequence, Dataset, build_rpn_targets, load_image_gt

# Per image: (class id, (y1, x1, y2, x2)) rectangles on a 48 x 64 canvas.
SHAPES = {
    0: [(1, (5, 5, 20, 30)), (2, (25, 35, 45, 60))],
    1: [],  # no instances: DataSequence must skip it
    2: [(1, (10, 40, 40, 50))],
}


class RectDataset(Dataset):
    """Grey images where each instance is a bright rectangle (value 40 * (index + 1))."""

    def load(self, shapes=SHAPES):
        self.add_class("rect", 1, "a")
        self.add_class("rect", 2, "b")
        for image_id, rects in shapes.items():
            self.add_image("rect", image_id=image_id, path=None, rects=rects)
        self.prepare()
        return self

    def load_image(self, image_id):
        image = np.zeros((48, 64, 3), np.uint8)
        for i, (_, (y1, x1, y2, x2)) in enumerate(self.image_info[image_id]["rects"]):
            image[y1:y2, x1:x2] = 40 * (i + 1)
        return image

    def load_mask(self, image_id):
        rects = self.image_info[image_id]["rects"]
        mask = np.zeros((48, 64, len(rects)), bool)
        for i, (_, (y1, x1, y2, x2)) in enumerate(rects):
            mask[y1:y2, x1:x2, i] = True
        return mask, np.array([c for c, _ in rects], np.int32)


def small_config(**overrides):
    fields = dict(
        NUM_CLASSES=3, IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64, BACKBONE="resnet50",
        RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128), RPN_TRAIN_ANCHORS_PER_IMAGE=32,
        MAX_GT_INSTANCES=4, MINI_MASK_SHAPE=(14, 14), IMAGES_PER_GPU=2,
    )  # fmt: skip
    fields.update(overrides)
    return Config(**fields)


@pytest.fixture(scope="module")
def dataset():
    return RectDataset().load()


# ---------------------------------------------------------------------- load_image_gt


def test_load_image_gt_resizes_image_boxes_and_mini_masks(dataset):
    config = small_config()
    image, meta, class_ids, bbox, masks = load_image_gt(dataset, config, 0)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(class_ids, [1, 2])
    # 48 x 64 fits as is (scale 1) and is padded by 8 rows top and bottom.
    np.testing.assert_array_equal(bbox, [[13, 5, 28, 30], [33, 35, 53, 60]])
    assert masks.shape == (14, 14, 2) and masks.dtype == bool and masks.all()
    parsed = U.parse_image_meta(meta)
    np.testing.assert_array_equal(parsed["window"], [8, 0, 56, 64])
    np.testing.assert_array_equal(parsed["active_class_ids"], [1, 1, 1])
    assert meta.shape == (config.IMAGE_META_SIZE,)


def test_load_image_gt_full_masks_without_mini_mask(dataset):
    image, _, _, bbox, masks = load_image_gt(dataset, small_config(USE_MINI_MASK=False), 0)
    assert masks.shape == (64, 64, 2)
    np.testing.assert_array_equal(U.extract_bboxes(masks), bbox)
    assert (image[masks[..., 0]] == 40).all()


def _flip(image, masks):
    return image[:, ::-1], masks[:, ::-1]


def test_plain_callable_augmentation_moves_masks_with_image(dataset):
    config = small_config(USE_MINI_MASK=False)
    image, _, _, bbox, masks = load_image_gt(dataset, config, 0, augmentation=_flip)
    for i, value in enumerate([40, 80]):
        np.testing.assert_array_equal(image[..., 0] == value, masks[..., i])
    np.testing.assert_array_equal(bbox[0], [13, 64 - 30, 28, 64 - 5])


def test_instances_whose_mask_vanishes_are_dropped(dataset):
    def erase_first(image, masks):
        masks = masks.copy()
        masks[..., 0] = False
        return image, masks

    _, _, class_ids, bbox, masks = load_image_gt(dataset, small_config(), 0, erase_first)
    np.testing.assert_array_equal(class_ids, [2])
    assert bbox.shape == (1, 4) and masks.shape[-1] == 1


class FakeImgaug:
    """Mimics imgaug's protocol (to_deterministic + augment_image), since imgaug itself does
    not import on NumPy 2. Its deterministic copy flips left-right and records its inputs."""

    def __init__(self):
        self.calls = []

    def to_deterministic(self):
        return self

    def augment_image(self, image, **kwargs):
        self.calls.append(image.dtype)
        return image[:, ::-1]


def test_imgaug_style_augmentation_uses_one_deterministic_copy(dataset):
    fake = FakeImgaug()
    config = small_config(USE_MINI_MASK=False)
    image, _, _, _, masks = load_image_gt(dataset, config, 0, augmentation=fake)
    assert fake.calls == [np.uint8, np.uint8]  # the image, then the masks as uint8
    np.testing.assert_array_equal(image[..., 0] == 80, masks[..., 1])


def test_augmentation_that_changes_shape_is_an_error(dataset):
    with pytest.raises(ValueError, match="keep the image and mask shapes"):
        load_image_gt(dataset, small_config(), 0, lambda im, m: (im[1:], m[1:]))


# ------------------------------------------------------------------ build_rpn_targets


def test_rpn_targets_thresholds_and_best_anchor_rule():
    config = small_config(RPN_TRAIN_ANCHORS_PER_IMAGE=10)
    gt = np.array([[0, 0, 10, 10], [50, 50, 60, 70]], np.float32)
    anchors = np.array(
        [
            [0, 0, 10, 10],  # IoU 1 with gt 0 -> positive
            [0, 0, 10, 13],  # IoU 10/13 = 0.77 -> positive
            [0, 0, 10, 20],  # IoU 0.5 -> neutral
            [30, 30, 40, 40],  # IoU 0 -> negative
            [50, 50, 60, 60],  # IoU 0.5 with gt 1, but its best anchor -> positive
        ],
        np.float32,
    )
    match, bbox = build_rpn_targets(
        (64, 64, 3), anchors, np.array([1, 1]), gt, config, rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(match, [1, 1, 0, -1, 1])
    expected = B.box_refinement(anchors[[0, 1, 4]], gt[[0, 0, 1]]) / config.RPN_BBOX_STD_DEV
    np.testing.assert_allclose(bbox[:3], expected, rtol=1e-5)
    np.testing.assert_array_equal(bbox[3:], 0)
    assert bbox.shape == (10, 4) and bbox.dtype == np.float32


def test_rpn_targets_anchors_on_crowd_boxes_are_not_negative():
    config = small_config()
    gt = np.array([[0, 0, 10, 10], [30, 30, 45, 45]], np.float32)
    anchors = np.array([[0, 0, 10, 10], [30, 30, 40, 40], [50, 50, 60, 60]], np.float32)
    match, bbox = build_rpn_targets(
        (64, 64, 3), anchors, np.array([1, -1]), gt, config, rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(match, [1, 0, -1])
    np.testing.assert_allclose(bbox[0], 0.0, atol=1e-6)


def test_rpn_targets_balance_positives_and_total():
    config = small_config(RPN_TRAIN_ANCHORS_PER_IMAGE=16)
    rng = np.random.default_rng(1)
    anchors = np.concatenate([np.tile([[0, 0, 10, 10]], (20, 1)), rng.uniform(30, 60, (50, 4))])
    anchors[20:, 2:] = anchors[20:, :2] + 3
    gt = np.array([[0, 0, 10, 10]], np.float32)

    def targets(seed):
        return build_rpn_targets(
            (64, 64, 3), anchors, np.array([1]), gt, config, rng=np.random.default_rng(seed)
        )[0]

    match = targets(5)
    assert (match == 1).sum() == 8 and (match == -1).sum() == 8
    np.testing.assert_array_equal(match, targets(5))
    assert not np.array_equal(match, targets(6))


def test_rpn_targets_without_gt_are_all_negative_samples():
    config = small_config(RPN_TRAIN_ANCHORS_PER_IMAGE=4)
    anchors = np.array([[0, 0, 5, 5]] * 6, np.float32)
    match, bbox = build_rpn_targets(
        (64, 64, 3), anchors, np.zeros(0, np.int32), np.zeros((0, 4)), config
    )
    assert (match == -1).sum() == 4 and (match == 1).sum() == 0 and not bbox.any()


# ------------------------------------------------------------------------ DataSequence


def test_sequence_batch_has_contract_keys_shapes_and_dtypes(dataset):
    config = small_config()
    (inputs,) = DataSequence(dataset, config, seed=3)[0]
    num_anchors = B.get_anchors(config, (64, 64, 3)).shape[0]
    expected = {
        "input_image": ((2, 64, 64, 3), np.float32),
        "input_image_meta": ((2, config.IMAGE_META_SIZE), np.float32),
        "input_rpn_match": ((2, num_anchors, 1), np.int32),
        "input_rpn_bbox": ((2, 32, 4), np.float32),
        "input_gt_class_ids": ((2, 4), np.int32),
        "input_gt_boxes": ((2, 4, 4), np.float32),
        "input_gt_masks": ((2, 14, 14, 4), bool),
    }
    assert {k: (v.shape, v.dtype) for k, v in inputs.items()} == expected


def test_sequence_skips_images_without_instances(dataset):
    sequence = DataSequence(dataset, small_config(), seed=0, steps=6)
    ids = [inputs["input_image_meta"][:, 0] for (inputs,) in (sequence[i] for i in range(6))]
    ids = np.concatenate(ids).astype(int)
    assert 1 not in ids and {0, 2} <= set(ids)
    for i in range(6):
        (inputs,) = sequence[i]
        n = (inputs["input_gt_class_ids"] > 0).sum(axis=1)
        assert (n > 0).all()


def test_sequence_keeps_empty_images_as_negatives_when_asked(dataset):
    config = small_config(SKIP_EMPTY_IMAGES=False, IMAGES_PER_GPU=1)
    sequence = DataSequence(dataset, config, shuffle=False)
    (inputs,) = sequence[1]  # image 1 has no instances
    assert inputs["input_image_meta"][0, 0] == 1
    assert not inputs["input_gt_class_ids"].any() and not inputs["input_gt_masks"].any()
    assert inputs["input_gt_masks"].shape == (1, 14, 14, 4)
    match = inputs["input_rpn_match"][0, :, 0]
    assert (match == 1).sum() == 0 and (match == -1).sum() == 32  # all sampled anchors negative


def test_sequence_is_reproducible_per_seed_epoch_and_index(dataset):
    config = small_config()
    first = DataSequence(dataset, config, seed=7)
    second = DataSequence(dataset, config, seed=7)
    a, b = first[1][0], second[1][0]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    orders = set()
    for _ in range(6):
        orders.add(tuple(first._epoch_order()))
        first.on_epoch_end()
    assert len(orders) > 1  # shuffled differently across epochs


def test_sequence_molds_images_and_pads_gt(dataset):
    config = small_config(IMAGES_PER_GPU=1)
    sequence = DataSequence(dataset, config, shuffle=False)
    (inputs,) = sequence[0]  # image 0
    assert len(sequence) == 3
    np.testing.assert_allclose(inputs["input_image"][0, 0, 0], -config.MEAN_PIXEL, rtol=1e-6)
    np.testing.assert_array_equal(inputs["input_gt_class_ids"][0], [1, 2, 0, 0])
    np.testing.assert_array_equal(inputs["input_gt_boxes"][0, 0], [13, 5, 28, 30])
    assert (inputs["input_rpn_match"] == 1).sum() > 0
