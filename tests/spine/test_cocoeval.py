"""Slice AP of spine.evaluation.metrics (mrcnn.metrics, Matterport semantics) against pycocotools.

Same predictions, two implementations. Where they are defined alike they agree within 0.01:
- per image, compute_ap (all-point envelope) vs COCOeval on that image alone (101 recall
  points): the envelope is non-increasing, so sampling it at 101 points differs from its
  integral by at most (max - min precision) / 100 <= 0.01;
- pooled over images, SliceEvaluation.pooled_AP50 vs COCOeval on all images.
Where they are defined differently, cases built for it show by how much:
- Matterport's mAP is the mean of per-image APs, COCO ranks all detections of all images
  together (a confident false positive in one image lowers the other images' precision);
- 101-point sampling vs the exact area (0.505 vs 0.5 for recall 1/2 at precision 1);
- ties of equal scores: Matterport sorts with argsort()[::-1] (later detections first),
  COCO with a stable sort (list order first). COCO's area ranges and maxDets=100 do not enter
  the numbers compared here ("all" areas, < 100 detections per slice).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from mrcnn.metrics import compute_ap, compute_ap_range  # noqa: E402
from mrcnn.utils import extract_bboxes  # noqa: E402
from spine.evaluation.metrics import AP_THRESHOLDS, SliceEvaluation  # noqa: E402

Image = tuple[np.ndarray, np.ndarray, np.ndarray]  # gt [H,W,G], pred [H,W,P], scores [P]


def coco_ap(images: list[Image]) -> tuple[float, float]:
    """(AP@0.5, AP@[.5:.95]) of pycocotools' segm evaluation over the images, one category."""
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "vertebra"}]}
    dets = []
    for i, (gt_masks, pred_masks, scores) in enumerate(images, start=1):
        h, w = gt_masks.shape[:2]
        gt["images"].append({"id": i, "height": h, "width": w})
        for k in range(gt_masks.shape[-1]):
            rle = mask_utils.encode(np.asfortranarray(gt_masks[..., k].astype(np.uint8)))
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                "segmentation": rle, "area": float(mask_utils.area(rle)),
                "bbox": list(mask_utils.toBbox(rle))})
        for k in range(pred_masks.shape[-1]):
            rle = mask_utils.encode(np.asfortranarray(pred_masks[..., k].astype(np.uint8)))
            dets.append({"image_id": i, "category_id": 1, "segmentation": rle,
                         "score": float(scores[k])})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets) if dets else COCO()
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, 0, 0, -1]  # [T, R]: category 0, area all, maxDets 100
    per_t = np.where(precision > -1, precision, 0).mean(axis=1)
    return float(per_t[0]), float(per_t.mean())


def matterport_ap(image: Image) -> tuple[float, float]:
    """(AP@0.5, AP@[.5:.95]) of mrcnn.metrics on one image."""
    gt_masks, pred_masks, scores = image
    args = (extract_bboxes(gt_masks), np.ones(gt_masks.shape[-1]), gt_masks,
            extract_bboxes(pred_masks), np.ones(pred_masks.shape[-1]), scores, pred_masks)
    return (compute_ap(*args, iou_threshold=0.5)[0],
            compute_ap_range(*args, iou_thresholds=AP_THRESHOLDS, verbose=0))


def _box(y: int, x: int, h: int, w: int, shape=(64, 64)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y : y + h, x : x + w] = True
    return mask


def random_scenes(count: int, seed: int = 0) -> list[Image]:
    """Vertebra-like scenes: a column of 3-6 boxes; predictions shifted/resized copies
    (IoU from ~0.3 to 1), some bodies missed, some false blobs; distinct random scores."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(count):
        n = int(rng.integers(3, 7))
        gts, preds = [], []
        for k in range(n):
            y, x = 2 + 10 * k, int(rng.integers(5, 30))
            gts.append(_box(y, x, 8, 14))
            if rng.random() < 0.85:  # found, with some error
                dy, dx = rng.integers(-3, 4, size=2)
                dh, dw = rng.integers(-2, 3, size=2)
                preds.append(_box(max(y + dy, 0), max(x + dx, 0), 8 + dh, 14 + dw))
        for _ in range(int(rng.integers(0, 3))):  # false positives
            preds.append(_box(int(rng.integers(0, 56)), int(rng.integers(45, 56)), 6, 6))
        scores = rng.permutation(np.linspace(0.3, 0.99, len(preds))).astype(np.float32)
        scenes.append((np.stack(gts, -1), np.stack(preds, -1), scores))
    return scenes


# ----------------------------------------------------------------------------- agreement
@pytest.fixture(scope="module")
def scenes() -> list[Image]:
    return random_scenes(25)


def test_per_image_ap_agrees_with_pycocotools_within_001(scenes):
    diffs = []
    for scene in scenes:
        ours, theirs = matterport_ap(scene), coco_ap([scene])
        diffs.append(np.abs(np.subtract(ours, theirs)))
    diffs = np.array(diffs)  # [images, (AP50, AP)]
    assert diffs.max() <= 0.01 + 1e-9
    assert diffs[:, 0].mean() < 0.005  # typically much closer than the bound


def test_pooled_ap_agrees_with_pycocotools_within_001(scenes):
    ev = SliceEvaluation()
    for gt, pred, scores in scenes:
        ev.add(gt, pred, scores)
    assert ev.summary()["pooled_AP50"] == pytest.approx(coco_ap(scenes)[0], abs=0.01)


def test_slice_evaluation_mean_ap_is_matterports_mean_of_images(scenes):
    ev = SliceEvaluation()
    for gt, pred, scores in scenes:
        ev.add(gt, pred, scores)
    expected = np.mean([matterport_ap(s) for s in scenes], axis=0)
    assert ev.summary()["mAP50"] == pytest.approx(expected[0])
    assert ev.summary()["mAP50_95"] == pytest.approx(expected[1])


# ----------------------------------------------------------------------------- differences
def test_mean_of_images_differs_from_pooling_when_a_false_positive_outranks_another_image():
    a = (_box(0, 0, 10, 10)[..., None], _box(0, 0, 10, 10)[..., None], np.array([0.9]))
    b = (_box(0, 0, 10, 10)[..., None],
         np.stack([_box(40, 40, 10, 10), _box(0, 0, 10, 10)], -1), np.array([0.95, 0.5]))
    ev = SliceEvaluation()
    for scene in (a, b):
        ev.add(*scene)
    # Per image: A = 1, B = FP then TP = 1/2 -> mean 0.75. Pooled: FP(.95) TP(.9) TP(.5)
    # -> precision envelope 2/3 at every recall -> 2/3, in both all-point and 101-point form.
    assert ev.summary()["mAP50"] == pytest.approx(0.75)
    assert ev.summary()["pooled_AP50"] == pytest.approx(2 / 3)
    assert coco_ap([a, b])[0] == pytest.approx(2 / 3)


def test_101_point_sampling_differs_from_the_exact_area():
    # 2 bodies, one found at precision 1: recall 1/2.
    scene = (np.stack([_box(0, 0, 10, 10), _box(20, 0, 10, 10)], -1),
             _box(0, 0, 10, 10)[..., None], np.array([0.9]))
    assert matterport_ap(scene)[0] == pytest.approx(0.5)  # area: 1/2 x 1
    assert coco_ap([scene])[0] == pytest.approx(51 / 101)  # recall points 0, .01, ..., .50


def test_equal_scores_are_ordered_differently():
    # One body; a false detection listed first and a true one second, both scoring 1.
    scene = (_box(0, 0, 10, 10)[..., None],
             np.stack([_box(40, 40, 10, 10), _box(0, 0, 10, 10)], -1), np.array([1.0, 1.0]))
    assert matterport_ap(scene)[0] == pytest.approx(1.0)  # argsort()[::-1]: true one first
    assert coco_ap([scene])[0] == pytest.approx(0.5)  # stable sort: false one first
