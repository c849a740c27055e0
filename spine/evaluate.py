"""Evaluate vertebra segmentation: Dice per body and level, slice mAP, with a baseline beside it.

    spine-evaluate --data DIR [--split split.json --subset val] [--weights W --config C]
                   [--baseline-only] --out OUT

DIR holds NAME.nii.gz + NAME_vertebrae.nii.gz pairs, or is an images/ + masks/ PNG folder
(then spine.evaluate_png scores each slice; --subset val|train|all). Every volume goes
through the model (spine.pipeline) and the classical baseline (spine.baseline); OUT receives
metrics.json, per_volume.csv, per_body.csv and REPORT.md with its plots (spine.report).

Two families of numbers:
- Volume metrics (pure numpy, model independent): each ground-truth body is matched to the
  predicted body that overlaps it most; Dice per body, mean Dice per volume (a missed body
  counts 0), recall (bodies found with Dice > 0.5) and false bodies (predicted bodies with
  Dice <= 0.5 against every ground-truth body).
- Slice metrics: mask AP@0.5 and AP@[.5:.95] per slice with mrcnn.metrics (Matterport's
  all-point envelope), averaged over the slices that contain a body (Matterport's mAP), plus
  the pooled AP@0.5 over all those slices (COCO's way of pooling; tests/spine/test_cocoeval.py
  explains where and by how much this differs from pycocotools).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spine.errors import SpineInputError
from spine.levels import SPINE_LEVELS

log = logging.getLogger(__name__)

DICE_FOUND = 0.5  # a body counts as found (and a prediction as true) above this Dice
AP_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's IoU thresholds .50:.05:.95, same floats
SCAN_SUFFIX, LABEL_SUFFIX = ".nii.gz", "_vertebrae.nii.gz"


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
def instance_masks(label_slice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label image int [H, W] -> (masks bool [H, W, N], ids int [N]) in ascending label order."""
    ids = np.unique(label_slice)
    ids = ids[ids != 0]
    return label_slice[..., None] == ids[None, None, :], ids


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
        args = (
            extract_bboxes(gt_masks),
            np.ones(g, np.int32),
            gt_masks,
            extract_bboxes(pred_masks),
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
        masks, _ = instance_masks(label_slice)
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
        gt_masks, _ = instance_masks(gt[s])
        if gt_masks.shape[-1]:
            result.add(gt_masks, masks, scores)
    return result


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Case:
    """One volume to evaluate: NAME.nii.gz and NAME_vertebrae.nii.gz in a folder."""

    name: str
    image: Path
    labels: Path

    @property
    def source(self) -> str:
        """The data source: the file name before its trailing _NN (chu2015_07 -> chu2015),
        as spine.prepare.source_of names it."""
        return re.sub(r"[_-]?\d+$", "", self.name) or self.name


def find_cases(
    data_dir: str | Path, split: str | Path | None = None, subset: str | None = None
) -> list[Case]:
    """Image/label pairs in a folder, optionally restricted to one subset of a split.json.

    Raises SpineInputError for a missing folder, a folder without pairs, or a bad split.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise SpineInputError(
            f"Data folder not found: {folder}. Pass a folder of "
            "NAME.nii.gz + NAME_vertebrae.nii.gz files with --data."
        )
    cases = []
    for label in sorted(folder.glob(f"*{LABEL_SUFFIX}")):
        name = label.name[: -len(LABEL_SUFFIX)]
        image = folder / f"{name}{SCAN_SUFFIX}"
        if image.is_file():
            cases.append(Case(name, image, label))
    if not cases:
        raise SpineInputError(f"No NAME.nii.gz + NAME_vertebrae.nii.gz pairs in {folder}.")
    if split is None:
        if subset is not None:
            raise SpineInputError("--subset needs --split (the split.json of spine-prepare).")
        return cases
    wanted = _split_subjects(Path(split), subset or "val")
    chosen = [c for c in cases if c.name in wanted or c.image.name in wanted]
    if not chosen:
        raise SpineInputError(
            f"None of the {len(wanted)} subjects of subset '{subset}' in "
            f"{split} has a volume pair in {folder}."
        )
    return chosen


def _split_subjects(path: Path, subset: str) -> set[str]:
    """Subject names of one subset of a split.json ({subset: [...]} or nested under a key)."""
    if not path.is_file():
        raise SpineInputError(
            f"Split file not found: {path}. Pass the split.json written by spine-prepare."
        )
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpineInputError(f"{path} is not a valid JSON split file: {exc}") from exc
    for table in (doc, doc.get("subjects"), doc.get("splits")) if isinstance(doc, dict) else ():
        if isinstance(table, dict) and isinstance(table.get(subset), list):
            names = {str(n) for n in table[subset]}
            return names | {n.removesuffix(SCAN_SUFFIX) for n in names}
    raise SpineInputError(f"{path} has no subset '{subset}' (a list of subjects).")


def parse_level_range(text: str) -> list[str] | None:
    """'T11-L5 (per source...)' -> ['T11', 'T12', 'L1', ..., 'L5']; None if not a range."""
    match = re.search(r"\b([CTLS]\d{1,2})\s*-\s*([CTLS]\d{1,2})\b", text)
    if not match or not {match.group(1), match.group(2)} <= set(SPINE_LEVELS):
        return None
    a, b = SPINE_LEVELS.index(match.group(1)), SPINE_LEVELS.index(match.group(2))
    return SPINE_LEVELS[a : b + 1] if a <= b else None


def case_levels(case: Case) -> list[str] | None:
    """Level names of the ground-truth bodies, top to bottom, where the data says them:
    NAME_levels.json (phantoms) or the folder's index.csv (levels_top_to_bottom column)."""
    from spine.phantom import read_levels

    if (case.labels.parent / f"{case.name}_levels.json").is_file():
        return read_levels(case.labels)
    index = case.labels.parent / "index.csv"
    if index.is_file():
        with index.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("image") in (case.image.name, case.name):
                    return parse_level_range(row.get("levels_top_to_bottom", ""))
    return None


# ----------------------------------------------------------------------------- running
@dataclass
class MethodResult:
    """One method's output on one volume: label map int32 [S, H, W], scores, slice AP."""

    labels: np.ndarray
    scores: VolumeScores
    slices: SliceEvaluation
    seconds: float
    # Per ground-truth body: found and given its true level name (None: levels unknown).
    named: np.ndarray | None = None


@dataclass
class CaseResult:
    """Everything measured on one volume; `methods` maps "model"/"baseline" to results."""

    case: Case
    gt: np.ndarray
    image: np.ndarray
    spacing: tuple[float, float, float]
    levels: list[str] | None
    methods: dict[str, MethodResult] = field(default_factory=dict)


def run_model(
    segmenter: Any, volume: Any, min_score: float = 0.0
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """The label map, every slice's detections and the level names, from one pass of
    Segmenter.segment_volume (the code the app and spine-segment run).

    The segmenter's network keeps detections down to its own (lowered) threshold, so AP
    ranks them; the label map keeps only those >= min_score (the operating point).
    Returns (labels int32 [S, H, W], S entries of (masks [H, W, n], scores [n]), the level
    names of labels 1..N as the page shows them).
    """
    result = segmenter.segment_volume(volume, min_score=min_score, keep_detections=True)
    return np.asarray(result.labels, dtype=np.int32), result.detections, list(result.levels)


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


def evaluate_case(
    case: Case, segmenter: Any = None, baseline: bool = True, min_score: float = 0.0
) -> CaseResult:
    """Load one volume pair and score the model (if given) and the baseline on it.

    min_score: the model's operating point for the label map (Dice, recall, false bodies);
    slice AP ranks every detection the network returned.
    """
    from spine.baseline import segment_volume_baseline
    from spine.volume import load_label_map, load_volume

    volume = load_volume(case.image, name=case.name)
    gt = load_label_map(case.labels, like=volume)
    levels = case_levels(case)
    out = CaseResult(case, gt, volume.data, tuple(volume.spacing), levels)
    if segmenter is not None:
        start = time.perf_counter()
        labels, detections, predicted_levels = run_model(segmenter, volume, min_score)
        seconds = time.perf_counter() - start
        scores = volume_metrics(gt, labels, levels)
        out.methods["model"] = MethodResult(
            labels, scores, evaluate_slices(gt, detections), seconds,
            names_right(scores, predicted_levels),
        )  # fmt: skip
    if baseline:
        start = time.perf_counter()
        labels = segment_volume_baseline(volume)
        seconds = time.perf_counter() - start
        out.methods["baseline"] = MethodResult(
            labels,
            volume_metrics(gt, labels, levels),
            evaluate_slices(gt, slice_detections_from_labels(labels)),
            seconds,
        )
    return out


def load_evaluation_segmenter(
    weights: Path | None, config: Path | None, ap_min_confidence: float
) -> tuple[Any, float]:
    """The model for evaluation and its operating point.

    The network runs at min(config's DETECTION_MIN_CONFIDENCE, ap_min_confidence) so that
    AP sees the ranked detections below the operating point (as COCO ranks detections down
    to a low score); the label maps keep the config's threshold, which is returned.
    """
    from spine.pipeline import load_model_config, load_segmenter, resolve_model_paths

    weights_path, config_src = resolve_model_paths(weights, config)
    cfg = load_model_config(config_src, weights_path)
    operating = float(cfg.DETECTION_MIN_CONFIDENCE)
    cfg = cfg.replace(DETECTION_MIN_CONFIDENCE=min(operating, ap_min_confidence))
    return load_segmenter(weights_path, cfg), operating


def _nanmean(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


def summarize(results: Sequence[CaseResult], info: dict[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json content: per method overall, per source and per level numbers.

    info: extra top-level entries (data folder, split, weights) copied into the summary.
    """
    methods = sorted({m for r in results for m in r.methods}, key=["model", "baseline"].index)
    summary: dict[str, Any] = {
        **(info or {}),
        "volumes": len(results),
        "dice_found": DICE_FOUND,
        "methods": {},
    }
    for method in methods:
        rows = [(r, r.methods[method]) for r in results if method in r.methods]
        slices = SliceEvaluation()
        for _, m in rows:
            slices.extend(m.slices)
        all_dice = np.concatenate([m.scores.dice for _, m in rows])
        per_source: dict[str, list[float]] = {}
        per_level: dict[str, list[float]] = {}
        for r, m in rows:
            per_source.setdefault(r.case.source, []).append(m.scores.mean_dice)
            for level, d in m.scores.per_level().items():
                per_level.setdefault(level, []).append(d)
        summary["methods"][method] = {
            "mean_dice": _nanmean([m.scores.mean_dice for _, m in rows]),
            "body_dice": float(all_dice.mean()) if all_dice.size else float("nan"),
            "recall": float((all_dice > DICE_FOUND).mean()) if all_dice.size else float("nan"),
            "false_bodies": int(sum(m.scores.false_bodies for _, m in rows)),
            "false_bodies_per_volume": float(np.mean([m.scores.false_bodies for _, m in rows])),
            "false_in_range_per_volume": float(
                np.mean([m.scores.false_in_range for _, m in rows])
            ),
            "foreground_dice": _nanmean([m.scores.foreground_dice for _, m in rows]),
            "gt_bodies": int(all_dice.size),
            "seconds_per_volume": float(np.mean([m.seconds for _, m in rows])),
            **_naming_summary([m.named for _, m in rows]),
            **slices.summary(),
            "per_source": {
                k: {"volumes": len(v), "mean_dice": _nanmean(v)}
                for k, v in sorted(per_source.items())
            },
            "per_level": {
                k: {
                    "bodies": len(v),
                    "mean_dice": _nanmean(v),
                    "recall": float(np.mean(np.asarray(v) > DICE_FOUND)),
                }
                for k, v in _level_order(per_level)
            },
        }
    return summary


def _naming_summary(named: Sequence[np.ndarray | None]) -> dict[str, Any]:
    """named_right (of all bodies with known levels) and volumes_fully_named, or {}."""
    known = [n for n in named if n is not None]
    if not known:
        return {}
    every = np.concatenate(known)
    return {
        "named_right": float(every.mean()) if every.size else float("nan"),
        "volumes_fully_named": float(np.mean([bool(n.all()) for n in known])),
    }


def _level_order(per_level: dict[str, list[float]]) -> list[tuple[str, list[float]]]:
    """Levels in anatomical order (unknown names last, alphabetically)."""
    rank = {name: i for i, name in enumerate(SPINE_LEVELS)}
    return sorted(per_level.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spine-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="folder of NAME.nii.gz + NAME_vertebrae.nii.gz pairs",
    )
    parser.add_argument("--split", type=Path, help="split.json written by spine-prepare")
    parser.add_argument("--subset", help="subset of --split to evaluate (default: val)")
    parser.add_argument("--weights", type=Path, help="model weights (.weights.h5)")
    parser.add_argument(
        "--config", type=Path, help="model config TOML the weights were trained with"
    )
    parser.add_argument(
        "--baseline-only",
        action="store_true",
        help="evaluate only the classical baseline (no model needed)",
    )
    parser.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="operating point of the label maps: drop detections below this score "
        "(default: the config's DETECTION_MIN_CONFIDENCE)",
    )
    parser.add_argument(
        "--ap-min-confidence",
        type=float,
        default=0.5,
        help="slice AP ranks the detections down to this score (default 0.5)",
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N volumes")
    parser.add_argument(
        "--split-seed", type=int, default=0,
        help="patient split of a PNG folder (spine-train's --split-seed)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point. Exit 0 on success, 2 on a user error (message, no traceback)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except SpineInputError as exc:
        print(f"spine-evaluate: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spine.png_folder import is_png_folder

    if is_png_folder(args.data):
        return _run_png(args)
    cases = find_cases(args.data, args.split, args.subset)
    if args.limit is not None:
        cases = cases[: max(args.limit, 0)]
    segmenter, operating = None, 0.0
    if not args.baseline_only:
        segmenter, operating = load_evaluation_segmenter(
            args.weights, args.config, args.ap_min_confidence
        )
    min_score = operating if args.min_score is None else args.min_score
    results = [
        evaluate_case(case, segmenter, baseline=True, min_score=min_score)
        for case in tqdm(cases, desc="evaluate", unit="vol", disable=args.no_progress)
    ]
    info = {
        "data": str(args.data),
        "split": str(args.split) if args.split else None,
        "subset": args.subset,
        "weights": None
        if segmenter is None
        else str(getattr(segmenter, "weights_path", args.weights)),
        "operating_confidence": None if segmenter is None else min_score,
        "ap_min_confidence": None if segmenter is None else args.ap_min_confidence,
    }
    from spine.report import write_outputs

    summary = write_outputs(results, summarize(results, info), args.out)
    lines = [f"{len(results)} volumes -> {args.out}"]
    for method, m in summary["methods"].items():
        lines.append(
            f"  {method:8s} mean Dice {m['mean_dice']:.3f}  recall {m['recall']:.3f}  "
            f"false bodies/vol {m['false_bodies_per_volume']:.2f} "
            f"({m['false_in_range_per_volume']:.2f} in the labelled range)  "
            f"mAP@.5 {m['mAP50']:.3f}  mAP@[.5:.95] {m['mAP50_95']:.3f}"
            + (f"  named {m['named_right']:.3f}" if "named_right" in m else "")
        )
    print("\n".join(lines))
    return 0


def _run_png(args: argparse.Namespace) -> int:
    """spine-evaluate on an images/ + masks/ folder (spine.evaluate_png); --subset val (the
    25 % of patients spine-train holds out, seed --split-seed), train or all."""
    from spine.evaluate_png import evaluate_png_folder, write_png_outputs
    from spine.png_folder import read_png_folder, split_patients

    subset = args.subset or "val"
    if subset not in ("val", "train", "all"):
        raise SpineInputError(f"--subset for a PNG folder is val, train or all, not {subset!r}")
    patients = None if subset == "all" else split_patients(args.data, args.split_seed)[subset]
    segmenter, operating = None, 0.0
    if not args.baseline_only:
        segmenter, operating = load_evaluation_segmenter(
            args.weights, args.config, args.ap_min_confidence
        )
    min_score = operating if args.min_score is None else args.min_score
    results = evaluate_png_folder(
        args.data, segmenter, patients, min_score, limit=args.limit,
        progress=not args.no_progress,
    )  # fmt: skip
    info = {
        "data": str(args.data), "subset": subset, "kind": read_png_folder(args.data)[0].kind,
        "split_seed": args.split_seed,
        "weights": None if segmenter is None else str(segmenter.weights_path),
        "operating_confidence": None if segmenter is None else min_score,
    }  # fmt: skip
    summary = write_png_outputs(results, info, args.out)
    print(f"{summary['methods'][next(iter(summary['methods']))]['slices']} slices -> {args.out}")
    for method, m in summary["methods"].items():
        s1 = "n/a" if m["s1_found"] is None else f"{m['s1_found']:.3f}"
        print(
            f"  {method:8s} Dice {m['body_dice']:.3f}  found {m['recall']:.3f}  "
            f"named {m['named_right']:.3f}  slices fully right {m['slices_fully_right']:.3f}  "
            f"S1 found {s1}  false/slice {m['false_per_slice']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
