"""Datasets: Matterport's Dataset base class (and, below it, the training batch sequence)."""

from __future__ import annotations

import logging
import math
from typing import Any

import keras
import numpy as np

from mrcnn import boxes, utils

logger = logging.getLogger(__name__)


class Dataset:
    """Base class for datasets, with Matterport's API.

    Subclass it, call add_class() and add_image() while loading, then prepare(). Override
    load_image() (RGB uint8 [H, W, 3]) and load_mask() (bool [H, W, N], class_ids int32 [N]).

        class ShapesDataset(Dataset):
            def load_shapes(self, count):
                self.add_class("shapes", 1, "square")
                self.add_image("shapes", image_id=0, path=None, width=128, height=128)
    """

    def __init__(self) -> None:
        self._image_ids: np.ndarray = np.array([], dtype=np.int64)
        self.image_info: list[dict[str, Any]] = []
        # Background is always the first class.
        self.class_info: list[dict[str, Any]] = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids: dict[str, list[int]] = {}

    def add_class(self, source: str, class_id: int, class_name: str) -> None:
        """Register a class of a source; a (source, id) pair already known is ignored."""
        assert "." not in source, "Source name cannot contain a dot"
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source: str, image_id: Any, path: Any, **kwargs: Any) -> None:
        """Register an image; kwargs are kept in image_info for load_image/load_mask."""
        info = {"id": image_id, "source": source, "path": path}
        info.update(kwargs)
        self.image_info.append(info)

    def image_reference(self, image_id: int) -> str:
        """A human-readable reference to the image (its path by default)."""
        return str(self.image_info[image_id].get("path", ""))

    def prepare(self) -> None:
        """Build the internal lookup tables. Call after adding classes and images."""

        def clean_name(name: str) -> str:
            return ",".join(name.split(",")[:1])

        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)

        # Map "source.id" -> internal class id / image id.
        self.class_from_source_map = {
            f"{info['source']}.{info['id']}": cid
            for info, cid in zip(self.class_info, self.class_ids, strict=True)
        }
        self.image_from_source_map = {
            f"{info['source']}.{info['id']}": iid
            for info, iid in zip(self.image_info, self._image_ids, strict=True)
        }

        self.sources = sorted({c["source"] for c in self.class_info})
        self.source_class_ids = {}
        for source in self.sources:
            self.source_class_ids[source] = [
                i for i, info in enumerate(self.class_info) if i == 0 or source == info["source"]
            ]

    def map_source_class_id(self, source_class_id: str) -> int:
        """'coco.12' -> internal class id."""
        return self.class_from_source_map[source_class_id]

    def get_source_class_id(self, class_id: int, source: str) -> int:
        """Internal class id -> the id in its source dataset."""
        info = self.class_info[class_id]
        assert info["source"] == source
        return info["id"]

    @property
    def image_ids(self) -> np.ndarray:
        return self._image_ids

    def source_image_link(self, image_id: int) -> Any:
        """The path or URL of the image in its source."""
        return self.image_info[image_id]["path"]

    def load_image(self, image_id: int) -> np.ndarray:
        """The image as RGB uint8 [H, W, 3]; grayscale is repeated, alpha dropped."""
        import skimage.io

        image = skimage.io.imread(self.image_info[image_id]["path"])
        return to_rgb_uint8(image)

    def load_mask(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance masks bool [H, W, N] and class ids int32 [N]. Override in subclasses.

        The base class has no annotations, so it returns no instances (with a warning).
        """
        logger.warning(
            "Dataset.load_mask is not overridden: %s has no instances",
            self.image_reference(image_id),
        )
        return np.empty([0, 0, 0], dtype=bool), np.empty([0], np.int32)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, 1|3|4] -> RGB [H, W, 3] uint8 (grayscale repeated, alpha dropped)."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    elif image.shape[-1] == 1:
        image = np.concatenate([image] * 3, axis=-1)
    elif image.shape[-1] == 4:
        image = image[..., :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


# =============================================================== ground truth for training


def load_image_gt(
    dataset: Dataset,
    config: Any,
    image_id: int,
    augmentation: Any = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load, resize and (optionally) augment one image with its instances, as Matterport does.

    Returns image uint8 [H, W, 3] (resized/padded per config), image_meta [META],
    class_ids int32 [N], bbox int32 [N, (y1, x1, y2, x2)] and masks bool [H, W, N], or
    [MINI_MASK_SHAPE..., N] when config.USE_MINI_MASK. Instances whose mask is empty after
    resizing/augmentation are dropped. rng drives random crops ("crop" mode).
    """
    image = dataset.load_image(image_id)
    mask, class_ids = dataset.load_mask(image_id)
    if mask.shape[-1] == 0:
        mask = np.zeros(image.shape[:2] + (0,), dtype=bool)
    original_shape = image.shape
    image, window, scale, padding, crop = utils.resize_image(
        image,
        min_dim=config.IMAGE_MIN_DIM,
        min_scale=config.IMAGE_MIN_SCALE,
        max_dim=config.IMAGE_MAX_DIM,
        mode=config.IMAGE_RESIZE_MODE,
        rng=rng,
    )
    mask = utils.resize_mask(mask, scale, padding, crop)
    if augmentation is not None:
        image, mask = _augment(augmentation, image, mask)

    present = mask.any(axis=(0, 1))  # [N]
    mask = mask[:, :, present]
    class_ids = np.asarray(class_ids, dtype=np.int32)[present]
    bbox = utils.extract_bboxes(mask)

    # Classes of the image's source dataset are "active" (scored by the class loss).
    active_class_ids = np.zeros([dataset.num_classes], dtype=np.int32)
    source = dataset.image_info[image_id]["source"]
    active_class_ids[dataset.source_class_ids[source]] = 1

    if config.USE_MINI_MASK:
        mask = utils.minimize_mask(bbox, mask, config.MINI_MASK_SHAPE)
    image_meta = utils.compose_image_meta(
        image_id, original_shape, image.shape, window, scale, active_class_ids
    )
    return image, image_meta, class_ids, bbox, mask


# imgaug augmenters that move pixels and so must also be applied to masks (Matterport's list).
MASK_AUGMENTERS = (
    "Sequential", "SomeOf", "OneOf", "Sometimes", "Fliplr", "Flipud", "CropAndPad", "Affine",
    "PiecewiseAffine",
)  # fmt: skip


def _augment(
    augmentation: Any, image: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply an augmentation to image uint8 [H, W, 3] and masks bool [H, W, N] together.

    imgaug-style objects (with to_deterministic) follow Matterport: one deterministic copy
    augments the image, then the masks as uint8 with only geometric augmenters active
    (imgaug hooks; objects that only mimic imgaug's protocol get no hooks, since imgaug itself
    may not import, e.g. on NumPy 2). Any other callable is called as
    augmentation(image, masks) -> (image, masks). Shapes must not change.
    """
    if hasattr(augmentation, "to_deterministic"):
        det = augmentation.to_deterministic()
        new_image = det.augment_image(image)
        new_mask = det.augment_image(mask.astype(np.uint8), **_imgaug_mask_hooks())
    else:
        new_image, new_mask = augmentation(image, mask)
    new_image, new_mask = np.asarray(new_image), np.asarray(new_mask)
    if new_image.shape != image.shape or new_mask.shape != mask.shape:
        raise ValueError(
            "augmentation must keep the image and mask shapes: "
            f"{image.shape}/{mask.shape} became {new_image.shape}/{new_mask.shape}"
        )
    return new_image.astype(np.uint8), new_mask.astype(bool)


def _imgaug_mask_hooks() -> dict[str, Any]:
    """{"hooks": HooksImages} limiting mask augmentation to MASK_AUGMENTERS, if imgaug imports."""
    try:
        import imgaug
    except Exception:  # imgaug is absent or broken (it fails on NumPy 2)
        return {}

    def activator(images: Any, augmenter: Any, parents: Any, default: Any) -> bool:
        return augmenter.__class__.__name__ in MASK_AUGMENTERS

    return {"hooks": imgaug.HooksImages(activator=activator)}


def build_rpn_targets(
    image_shape: Any,
    anchors: np.ndarray,
    gt_class_ids: np.ndarray,
    gt_boxes: np.ndarray,
    config: Any,
    *,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """RPN training targets with Matterport's rules.

    anchors: [A, 4] pixel anchors; gt_class_ids: [N] (negative = crowd); gt_boxes: [N, 4]
    pixels. Positive (1): IoU >= 0.7, plus the best anchor(s) of every GT box; negative (-1):
    IoU < 0.3 and not touching a crowd box; the rest neutral (0). Subsampled to at most
    RPN_TRAIN_ANCHORS_PER_IMAGE with at most half positive. Returns rpn_match int32 [A] and
    rpn_bbox float32 [RPN_TRAIN_ANCHORS_PER_IMAGE, 4]: deltas of the positives (in
    rpn_match order) divided by RPN_BBOX_STD_DEV, zero padded.
    """
    rng = rng if rng is not None else np.random.default_rng()
    num_anchors = anchors.shape[0]
    per_image = config.RPN_TRAIN_ANCHORS_PER_IMAGE
    rpn_match = np.zeros([num_anchors], dtype=np.int32)
    rpn_bbox = np.zeros((per_image, 4), dtype=np.float32)

    # Crowd boxes (negative class ids) are not targets; anchors touching them are not negative.
    crowd = gt_class_ids < 0
    no_crowd = np.ones([num_anchors], dtype=bool)
    if crowd.any():
        no_crowd = boxes.compute_overlaps(anchors, gt_boxes[crowd]).max(axis=1) < 0.001
    gt_boxes = gt_boxes[gt_class_ids > 0]

    overlaps = boxes.compute_overlaps(anchors, gt_boxes)  # [A, N]
    if gt_boxes.shape[0]:
        best_gt = overlaps.argmax(axis=1)  # [A]
        anchor_iou_max = overlaps[np.arange(num_anchors), best_gt]
    else:
        best_gt = np.zeros([num_anchors], dtype=np.int64)
        anchor_iou_max = np.zeros([num_anchors])
    rpn_match[(anchor_iou_max < 0.3) & no_crowd] = -1
    # Every GT box gets its best anchor(s) as positives, whatever the IoU (if it overlaps any).
    gt_iou_max = overlaps.max(axis=0, initial=0.0)  # [N]
    best_anchor = ((overlaps == gt_iou_max) & (gt_iou_max > 0)).any(axis=1)
    rpn_match[best_anchor] = 1
    rpn_match[anchor_iou_max >= 0.7] = 1

    _neutralise_extra(rpn_match, 1, per_image // 2, rng)
    _neutralise_extra(rpn_match, -1, per_image - int(np.sum(rpn_match == 1)), rng)

    positives = np.where(rpn_match == 1)[0]
    deltas = boxes.box_refinement(anchors[positives], gt_boxes[best_gt[positives]])
    rpn_bbox[: len(positives)] = deltas / config.RPN_BBOX_STD_DEV
    return rpn_match, rpn_bbox


def _neutralise_extra(
    rpn_match: np.ndarray, value: int, limit: int, rng: np.random.Generator
) -> None:
    """Set random anchors labelled value to 0 (in place) until at most limit remain."""
    ids = np.where(rpn_match == value)[0]
    extra = len(ids) - limit
    if extra > 0:
        rpn_match[rng.choice(ids, extra, replace=False)] = 0


# ========================================================================== batch sequence


class DataSequence(keras.utils.PyDataset):
    """Training batches for MaskRCNN (Matterport's data_generator as a keras PyDataset).

    Batch i of epoch e is a pure function of (seed, e, i): images are taken in a per-epoch
    permutation (when shuffle) and every random choice uses a Generator seeded with
    (seed, e, i), so workers may build batches in any order. Images with no instances
    (after resizing/augmentation) are skipped, as Matterport does, by drawing another image,
    unless config.SKIP_EMPTY_IMAGES is False: then they are trained on as negatives.
    __getitem__ returns (inputs,), a dict keyed like the model's inputs.
    """

    MAX_DRAWS_PER_IMAGE = 20  # skipped images before giving up on a batch slot

    def __init__(
        self,
        dataset: Dataset,
        config: Any,
        shuffle: bool = True,
        augmentation: Any = None,
        seed: int = 0,
        steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if len(dataset.image_ids) == 0:
            raise ValueError("DataSequence needs a prepared dataset with at least one image")
        self.dataset = dataset
        self.config = config
        self.shuffle = shuffle
        self.augmentation = augmentation
        self.seed = seed
        self.batch_size = config.BATCH_SIZE
        self.steps = steps or math.ceil(len(dataset.image_ids) / self.batch_size)
        self.epoch = 0
        self._anchor_cache: dict[tuple[int, ...], np.ndarray] = {}

    def __len__(self) -> int:
        return self.steps

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray]]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        order = self._epoch_order()
        samples = []
        for slot in range(self.batch_size):
            position = (index * self.batch_size + slot) % len(order)
            samples.append(self._load_sample(int(order[position]), rng))
        return (self._collate(samples),)

    def _epoch_order(self) -> np.ndarray:
        """Image ids of the current epoch, permuted with (seed, epoch) when shuffling."""
        ids = self.dataset.image_ids
        if not self.shuffle:
            return ids
        return np.random.default_rng([self.seed, self.epoch]).permutation(ids)

    def _load_sample(self, image_id: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One image's inputs; images without (non-crowd) instances are replaced at random
        when config.SKIP_EMPTY_IMAGES (the default)."""
        skip_empty = self.config.SKIP_EMPTY_IMAGES
        for _ in range(self.MAX_DRAWS_PER_IMAGE):
            image, meta, class_ids, bbox, masks = load_image_gt(
                self.dataset, self.config, image_id, self.augmentation, rng
            )
            if np.any(class_ids > 0) or not skip_empty:
                break
            logger.debug("skipping image %s: no instances", image_id)
            image_id = int(rng.choice(self.dataset.image_ids))
        else:
            raise ValueError(
                f"DataSequence: no instances in {self.MAX_DRAWS_PER_IMAGE} images drawn; "
                "does load_mask return the annotations?"
            )
        rpn_match, rpn_bbox = build_rpn_targets(
            image.shape, self._pixel_anchors(image.shape), class_ids, bbox, self.config, rng=rng
        )
        # Keep at most MAX_GT_INSTANCES instances (a random subset, as Matterport does).
        if len(class_ids) > self.config.MAX_GT_INSTANCES:
            keep = rng.choice(len(class_ids), self.config.MAX_GT_INSTANCES, replace=False)
            class_ids, bbox, masks = class_ids[keep], bbox[keep], masks[:, :, keep]
        return {
            "image": image, "meta": meta, "rpn_match": rpn_match, "rpn_bbox": rpn_bbox,
            "class_ids": class_ids, "boxes": bbox, "masks": masks,
        }  # fmt: skip

    def _pixel_anchors(self, image_shape: tuple[int, ...]) -> np.ndarray:
        """Pyramid anchors in pixels for an input shape (cached per shape)."""
        key = tuple(int(s) for s in image_shape[:2])
        if key not in self._anchor_cache:
            config = self.config
            self._anchor_cache[key] = boxes.generate_pyramid_anchors(
                config.RPN_ANCHOR_SCALES,
                config.RPN_ANCHOR_RATIOS,
                boxes.compute_backbone_shapes(config, image_shape),
                config.BACKBONE_STRIDES,
                config.RPN_ANCHOR_STRIDE,
            )
        return self._anchor_cache[key]

    def _collate(self, samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Stack samples into the model's input dict, zero padding to MAX_GT_INSTANCES."""
        max_gt = self.config.MAX_GT_INSTANCES
        batch = len(samples)
        mask_shape = samples[0]["masks"].shape[:2]
        class_ids = np.zeros([batch, max_gt], dtype=np.int32)
        gt_boxes = np.zeros([batch, max_gt, 4], dtype=np.float32)
        gt_masks = np.zeros([batch, *mask_shape, max_gt], dtype=bool)
        for b, sample in enumerate(samples):
            n = len(sample["class_ids"])
            class_ids[b, :n] = sample["class_ids"]
            gt_boxes[b, :n] = sample["boxes"]
            gt_masks[b, :, :, :n] = sample["masks"]
        images = np.stack([s["image"] for s in samples])
        return {
            "input_image": utils.mold_image(images, self.config),
            "input_image_meta": np.stack([s["meta"] for s in samples]).astype(np.float32),
            "input_rpn_match": np.stack([s["rpn_match"] for s in samples])[:, :, None],
            "input_rpn_bbox": np.stack([s["rpn_bbox"] for s in samples]),
            "input_gt_class_ids": class_ids,
            "input_gt_boxes": gt_boxes,
            "input_gt_masks": gt_masks,
        }
