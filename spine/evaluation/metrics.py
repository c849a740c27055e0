"""Evaluation metrics: Dice per body, slice mask AP, slice scores of a PNG folder (pure numpy
plus mrcnn.metrics; nothing here runs a model or reads a file).

- Volume metrics: each ground-truth body is matched to the predicted body that overlaps it
  most; Dice per body, mean Dice per volume (a missed body counts 0), recall (bodies found
  with Dice > 0.5) and false bodies (predicted bodies with Dice <= 0.5 against every
  ground-truth body).
- Slice metrics: mask AP@0.5 and AP@[.5:.95] per slice with mrcnn.metrics (Matterport's
  all-point envelope), averaged over the slices that contain a body (Matterport's mAP), plus
  the pooled AP@0.5 over all those slices (COCO's way of pooling; tests/spine/test_cocoeval.py
  explains where and by how much this differs from pycocotools).
- PNG slices (score_slice): found, named right and false bodies on one labelled slice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from spine.volume import label_instances

log = logging.getLogger(__name__)

DICE_FOUND = 0.5  # a body counts as found (and a prediction as true) above this Dice
INSIDE_FOUND = 0.5  # SPIDER: a prediction at least this much inside a body finds it
AP_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's IoU thresholds .50:.05:.95, same floats

# ----------------------------------------------------------------------------- volume metrics
@dataclass
class VolumeScores:
    """Dice-based scores of one predicted label map against its ground truth.

    gt_ids: int [G] ground-truth labels; dice: float [G] Dice of each with its best-overlapping
    predicted body (0 when nothing overlaps); matched: int [G] that predicted label (0 = none);
    levels: G level names or None. pred_ids: int [P]; false_ids: predicted labels with
    Dice <= 0.5 against every ground-truth body.
    """

    gt_ids: np.ndarray
    dice: np.ndarray
    matched: np.ndarray
    pred_ids: np.ndarray
    false_ids: np.ndarray
    foreground_dice: float
    levels: list[str] | None = None
    # False predicted bodies centred above the highest / below the lowest labelled body:
    # vertebrae the data leave unlabelled (T10, S1, ...), not necessarily errors.
    outside_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def mean_dice(self) -> float:
        """Mean Dice over ground-truth bodies (nan for a map without bodies)."""
        return float(self.dice.mean()) if self.dice.size else float("nan")

    @property
    def recall(self) -> float:
        """Fraction of ground-truth bodies found with Dice > 0.5."""
        return float((self.dice > DICE_FOUND).mean()) if self.dice.size else float("nan")

    @property
    def false_bodies(self) -> int:
        return int(self.false_ids.size)

    @property
    def false_in_range(self) -> int:
        """False bodies within the labelled range (between the top and bottom labelled rows)."""
        return int(self.false_ids.size - self.outside_ids.size)

    @property
    def merges(self) -> int:
        """Predicted bodies that are the best match of two or more ground-truth bodies.

        Best-overlap matching lets one merged prediction reach Dice 2/3 with each of two
        equal bodies (so both count as found); this count shows when that happens.
        """
        hits = self.matched[self.matched > 0]
        return int((np.unique(hits, return_counts=True)[1] > 1).sum())

    def per_level(self) -> dict[str, float]:
        """{level name: Dice} where level names are known, else {}."""
        if self.levels is None:
            return {}
        return {name: float(d) for name, d in zip(self.levels, self.dice, strict=True)}


def overlap_counts(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel counts of every (ground-truth, predicted) label pair.

    gt, pred: int [S, H, W] (any equal shape), 0 background. Returns (counts int64 [G+1, P+1]
    with row/column 0 the background, gt_ids [G], pred_ids [P]).
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"label maps differ in shape: {gt.shape} vs {pred.shape}")
    gt_ids, gt_idx = np.unique(gt, return_inverse=True)
    pred_ids, pred_idx = np.unique(pred, return_inverse=True)
    # Ensure index 0 is background even when a map has no background voxel.
    if gt_ids.size == 0 or gt_ids[0] != 0:
        gt_ids, gt_idx = np.concatenate([[0], gt_ids]), gt_idx + 1
    if pred_ids.size == 0 or pred_ids[0] != 0:
        pred_ids, pred_idx = np.concatenate([[0], pred_ids]), pred_idx + 1
    n_p = pred_ids.size
    flat = gt_idx.ravel().astype(np.int64) * n_p + pred_idx.ravel()
    counts = np.bincount(flat, minlength=gt_ids.size * n_p).reshape(gt_ids.size, n_p)
    return counts, gt_ids[1:].astype(np.int64), pred_ids[1:].astype(np.int64)


def volume_metrics(
    gt: np.ndarray, pred: np.ndarray, levels: Sequence[str] | None = None
) -> VolumeScores:
    """Score a predicted label map against the ground truth, body by body.

    gt, pred: int [S, H, W], 0 background, one label per body (labels need not be
    contiguous or agree in numbering). levels: names of the ground-truth bodies in ascending
    label order (len G), or None.
    """
    counts, gt_ids, pred_ids = overlap_counts(gt, pred)
    inter = counts[1:, 1:].astype(np.float64)  # [G, P]
    gt_size = counts[1:, :].sum(axis=1).astype(np.float64)  # [G]
    pred_size = counts[:, 1:].sum(axis=0).astype(np.float64)  # [P]
    dice_pairs = 2.0 * inter / np.maximum(gt_size[:, None] + pred_size[None, :], 1.0)  # [G, P]
    if pred_ids.size:
        best = np.argmax(inter, axis=1)  # [G] most-overlapping predicted body
        hit = inter[np.arange(gt_ids.size), best] > 0
        dice = np.where(hit, dice_pairs[np.arange(gt_ids.size), best], 0.0)
        matched = np.where(hit, pred_ids[best], 0)
        true_pred = (
            (dice_pairs > DICE_FOUND).any(axis=0) if gt_ids.size else np.zeros(pred_ids.size, bool)
        )
    else:
        dice, matched = np.zeros(gt_ids.size), np.zeros(gt_ids.size, np.int64)
        true_pred = np.zeros(0, bool)
    fg_inter = float(counts[1:, 1:].sum())
    fg_total = float(gt_size.sum() + pred_size.sum())
    if levels is not None and len(levels) != gt_ids.size:
        log.warning("%d level names for %d bodies: levels ignored", len(levels), gt_ids.size)
        levels = None
    false_ids = pred_ids[~true_pred]
    return VolumeScores(
        gt_ids=gt_ids,
        dice=dice,
        matched=matched.astype(np.int64),
        pred_ids=pred_ids,
        false_ids=false_ids,
        foreground_dice=2.0 * fg_inter / fg_total if fg_total else 1.0,
        levels=list(levels) if levels is not None else None,
        outside_ids=outside_labelled_range(gt, pred, false_ids),
    )


def outside_labelled_range(gt: np.ndarray, pred: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The predicted labels among ids whose mean row lies above the highest or below the
    lowest ground-truth voxel row (rows run superior -> inferior). gt, pred: int [S, H, W]."""
    gt_rows = np.flatnonzero((np.asarray(gt) > 0).any(axis=(0, 2)))
    if ids.size == 0 or gt_rows.size == 0:
        return np.asarray(ids, np.int64)[:0]
    flat = np.asarray(pred, np.int64).ravel()
    row_of = np.broadcast_to(np.arange(pred.shape[1])[None, :, None], pred.shape).ravel()
    size = np.bincount(flat, minlength=int(ids.max()) + 1)
    row_sum = np.bincount(flat, weights=row_of, minlength=int(ids.max()) + 1)
    centre = row_sum[ids] / np.maximum(size[ids], 1)  # mean row of each predicted body
    return ids[(centre < gt_rows[0]) | (centre > gt_rows[-1])]



# ----------------------------------------------------------------------------- slice metrics
def envelope_ap(precisions: np.ndarray, recalls: np.ndarray) -> float:
    """All-point interpolated AP (Matterport/VOC2010+): area under the precision envelope.

    precisions, recalls: [K] cumulative values in detection order (best score first).
    """
    p = np.concatenate([[0.0], precisions, [0.0]])
    r = np.concatenate([[0.0], recalls, [1.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # envelope: max precision at recall >= r
    steps = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))


@dataclass
class SliceEvaluation:
    """Running slice-level AP over many slices (one method).

    ap50, ap: per-slice AP@0.5 and AP@[.5:.95]; scores/true_pos: every detection's score and
    whether it matched a ground-truth body at IoU 0.5 (for the pooled PR curve); num_gt: total
    ground-truth bodies over the slices.
    """

    ap50: list[float] = field(default_factory=list)
    ap: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    true_pos: list[bool] = field(default_factory=list)
    num_gt: int = 0

    def add(self, gt_masks: np.ndarray, pred_masks: np.ndarray, pred_scores: np.ndarray) -> None:
        """Score one slice. gt_masks bool [H, W, G] (G >= 1); pred_masks bool [H, W, P];
        pred_scores float [P]."""
        from mrcnn.metrics import compute_ap, compute_ap_range, compute_matches
        from mrcnn.utils import extract_bboxes

        g, p = gt_masks.shape[-1], pred_masks.shape[-1]
        if g == 0:
            raise ValueError("slice AP is defined on slices with at least one ground-truth body")
        self.num_gt += g
        if p == 0:
            self.ap50.append(0.0)
            self.ap.append(0.0)
            return
        pred_scores = np.asarray(pred_scores, dtype=np.float32)
        # An empty predicted mask (a box whose mask pasted to nothing) has a zero box, which
        # mrcnn.metrics would trim as padding and misalign the scores: give it a 1-pixel box
        # so that it stays a false detection (its mask overlaps nothing).
        pred_boxes = extract_bboxes(pred_masks)
        pred_boxes[~pred_masks.any(axis=(0, 1))] = (0, 0, 1, 1)
        args = (
            extract_bboxes(gt_masks),
            np.ones(g, np.int32),
            gt_masks,
            pred_boxes,
            np.ones(p, np.int32),
            pred_scores,
            pred_masks,
        )
        self.ap50.append(float(compute_ap(*args, iou_threshold=0.5)[0]))
        self.ap.append(float(compute_ap_range(*args, iou_thresholds=AP_THRESHOLDS, verbose=0)))
        _, pred_match, _ = compute_matches(*args, iou_threshold=0.5)
        self.scores.extend(np.sort(pred_scores)[::-1].tolist())  # compute_matches' order
        self.true_pos.extend((np.asarray(pred_match) > -1).tolist())

    def extend(self, other: SliceEvaluation) -> None:
        """Merge another evaluation's slices into this one."""
        self.ap50 += other.ap50
        self.ap += other.ap
        self.scores += other.scores
        self.true_pos += other.true_pos
        self.num_gt += other.num_gt

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Pooled precision and recall [K] over all slices' detections, best score first."""
        order = np.argsort(-np.asarray(self.scores, dtype=np.float64), kind="stable")
        tp = np.asarray(self.true_pos, dtype=bool)[order]
        hits = np.cumsum(tp)
        precisions = hits / np.arange(1, tp.size + 1)
        recalls = hits / max(self.num_gt, 1)
        return precisions.astype(np.float64), recalls.astype(np.float64)

    def summary(self) -> dict[str, float]:
        """mAP@0.5 and mAP@[.5:.95] (mean over slices) and pooled AP@0.5."""
        precisions, recalls = self.pr_curve()
        nan = float("nan")
        return {
            "slices": len(self.ap50),
            "mAP50": float(np.mean(self.ap50)) if self.ap50 else nan,
            "mAP50_95": float(np.mean(self.ap)) if self.ap else nan,
            "pooled_AP50": envelope_ap(precisions, recalls) if self.num_gt else nan,
        }


def slice_detections_from_labels(labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """A label map int [S, H, W] as per-slice detections [(masks [H, W, n], scores [n])].

    For methods without confidences (the baseline) the score is the mask's extent (area /
    box area, in (0, 1]): compact blobs rank first, and AP does not hinge on how ties of a
    constant score are ordered (Matterport and COCO order ties differently).
    """
    from mrcnn.utils import extract_bboxes

    out = []
    for label_slice in labels:
        masks, _ = label_instances(label_slice)
        boxes = extract_bboxes(masks).astype(np.float64)  # [n, (y1, x1, y2, x2)]
        box_area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1.0)
        out.append((masks, (masks.sum(axis=(0, 1)) / box_area).astype(np.float32)))
    return out


def evaluate_slices(
    gt: np.ndarray, detections: Sequence[tuple[np.ndarray, np.ndarray]]
) -> SliceEvaluation:
    """Slice AP of one volume over its slices that contain a ground-truth body.

    gt: int [S, H, W]; detections: S entries of (masks bool [H, W, n], scores [n]).
    """
    result = SliceEvaluation()
    for s, (masks, scores) in enumerate(detections):
        gt_masks, _ = label_instances(gt[s])
        if gt_masks.shape[-1]:
            result.add(gt_masks, masks, scores)
    return result


def names_right(scores: VolumeScores, predicted_levels: Sequence[str]) -> np.ndarray | None:
    """bool [G]: each ground-truth body found (Dice > 0.5) by a predicted body carrying its
    level name; None when the ground truth has no level names."""
    if scores.levels is None:
        return None
    out = np.zeros(scores.gt_ids.size, bool)
    for g, (level, label, dice) in enumerate(
        zip(scores.levels, scores.matched, scores.dice, strict=True)
    ):
        if dice > DICE_FOUND and 0 < label <= len(predicted_levels):
            out[g] = predicted_levels[int(label) - 1] == level
    return out


def trust_in_names(
    cases: Sequence[tuple[bool, bool]],
) -> tuple[float | None, float | None, float | None]:
    """Are the name confidences worth reading? cases: per slice or volume (fully named
    right, some name shown as unsure). Returns (share of cases with a name marked unsure,
    fully right of the cases whose names were all shown as sure, fully right of the others);
    None where there is no case to count. Sure names should be right; the errors should sit
    where a name is marked unsure."""
    sure = [right for right, unsure in cases if not unsure]
    unsure = [right for right, unsure in cases if unsure]
    return (
        len(unsure) / len(cases) if cases else None,
        float(np.mean(sure)) if sure else None,
        float(np.mean(unsure)) if unsure else None,
    )


def score_slice(
    gt_labels: np.ndarray,
    gt_levels: Sequence[str],
    pred_masks: np.ndarray,
    pred_levels: Sequence[str],
    semantic: bool,
    ignore: np.ndarray | None = None,
) -> tuple[list[float], list[bool], list[bool], int]:
    """(dice, found, named per ground-truth body, false predictions) on one slice.

    gt_labels int [H, W] (body k = label k, top to bottom); pred_masks bool [H, W, P].
    semantic: found = a prediction >= 50 % inside the body (else Dice > 0.5). ignore: bool
    [H, W] where vertebrae are unlabelled; predictions centred there are not false.
    """
    gt_ids = np.arange(1, len(gt_levels) + 1)
    gt = gt_labels[..., None] == gt_ids[None, None, :]  # [H, W, G]
    g, p = gt.shape[-1], pred_masks.shape[-1]
    inter = np.einsum("hwg,hwp->gp", gt.astype(np.float32), pred_masks.astype(np.float32))
    gt_area = gt.sum(axis=(0, 1)).astype(np.float64)  # [G]
    pred_area = np.maximum(pred_masks.sum(axis=(0, 1)).astype(np.float64), 1.0)  # [P]
    dice_pairs = 2.0 * inter / np.maximum(gt_area[:, None] + pred_area[None, :], 1.0)
    inside = inter / pred_area[None, :]  # [G, P] fraction of each prediction inside each body
    dice, found, named = [], [], []
    for k in range(g):
        if p == 0:
            dice.append(0.0)
            found.append(False)
            named.append(False)
            continue
        best = int(np.argmax(inside[k] if semantic else dice_pairs[k]))
        hit = inside[k, best] >= INSIDE_FOUND if semantic else dice_pairs[k, best] > DICE_FOUND
        dice.append(float(dice_pairs[k].max()))
        found.append(bool(hit))
        named.append(bool(hit and pred_levels[best] == gt_levels[k]))
    matched = (inside >= INSIDE_FOUND).any(axis=0) if semantic else (dice_pairs > DICE_FOUND).any(0)
    false = 0
    for j in np.flatnonzero(~matched) if g else range(p):
        ys, xs = np.nonzero(pred_masks[..., j])
        if ys.size and ignore is not None and ignore[int(ys.mean()), int(xs.mean())]:
            continue
        false += 1
    return dice, found, named, false
