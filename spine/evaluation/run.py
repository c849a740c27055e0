"""Running the evaluation: each volume through the app's code (spine.pipeline.Segmenter) and
the classical baseline (spine.baseline), scored with spine.evaluation.metrics, then summed
up into metrics.json's content (summarize). spine.evaluation.report writes the files.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spine.evaluation.metrics import (
    DICE_FOUND,
    SliceEvaluation,
    VolumeScores,
    evaluate_slices,
    names_right,
    slice_detections_from_labels,
    trust_in_names,
    volume_metrics,
)
from spine.folders import VolumePair, pair_levels
from spine.levels import level_rank


@dataclass
class MethodResult:
    """One method's output on one volume: label map int32 [S, H, W], scores, slice AP."""

    labels: np.ndarray
    scores: VolumeScores
    slices: SliceEvaluation
    seconds: float
    # Per ground-truth body: found and given its true level name (None: levels unknown).
    named: np.ndarray | None = None
    # Some name in the volume was shown as unsure (spine.pipeline.name_is_unsure).
    names_unsure: bool = False


@dataclass
class CaseResult:
    """Everything measured on one volume; `methods` maps "model"/"baseline" to results."""

    case: VolumePair
    gt: np.ndarray
    image: np.ndarray
    spacing: tuple[float, float, float]
    levels: list[str] | None
    methods: dict[str, MethodResult] = field(default_factory=dict)


def run_model(
    segmenter: Any, volume: Any, min_score: float = 0.0
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], list[str], bool]:
    """The label map, every slice's detections and the level names, from one pass of
    Segmenter.segment_volume (the code the app and spine-segment run).

    The segmenter's network keeps detections down to its own (lowered) threshold, so AP
    ranks them; the label map keeps only those >= min_score (the operating point).
    Returns (labels int32 [S, H, W], S entries of (masks [H, W, n], scores [n]), the level
    names of labels 1..N as the page shows them, whether the page marks any name unsure).
    """
    from spine.pipeline import name_is_unsure

    result = segmenter.segment_volume(volume, min_score=min_score, keep_detections=True)
    unsure = any(name_is_unsure(c) for c in result.name_confidence)
    labels = np.asarray(result.labels, dtype=np.int32)
    return labels, result.detections, list(result.levels), unsure


def evaluate_case(
    case: VolumePair, segmenter: Any = None, baseline: bool = True, min_score: float = 0.0
) -> CaseResult:
    """Load one volume pair and score the model (if given) and the baseline on it.

    min_score: the model's operating point for the label map (Dice, recall, false bodies);
    slice AP ranks every detection the network returned.
    """
    from spine.baseline import segment_volume_baseline
    from spine.volume import load_label_map, load_volume

    volume = load_volume(case.image, name=case.subject)
    gt = load_label_map(case.labels, like=volume)
    levels = pair_levels(case)
    out = CaseResult(case, gt, volume.data, tuple(volume.spacing), levels)
    if segmenter is not None:
        start = time.perf_counter()
        labels, detections, predicted_levels, unsure = run_model(segmenter, volume, min_score)
        seconds = time.perf_counter() - start
        scores = volume_metrics(gt, labels, levels)
        out.methods["model"] = MethodResult(
            labels, scores, evaluate_slices(gt, detections), seconds,
            names_right(scores, predicted_levels), unsure,
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
            **_naming_summary([(m.named, m.names_unsure) for _, m in rows]),
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


def _naming_summary(named: Sequence[tuple[np.ndarray | None, bool]]) -> dict[str, Any]:
    """named_right (of all bodies with known levels), volumes_fully_named, and how often a
    volume fully named right had every name shown as sure or some name marked unsure; {}
    without known levels. named: per volume (named per body or None, names_unsure)."""
    known = [(n, unsure) for n, unsure in named if n is not None]
    if not known:
        return {}
    every = np.concatenate([n for n, _ in known])
    fully = [(bool(n.all()), unsure) for n, unsure in known]  # per volume
    share_unsure, right_when_sure, right_when_unsure = trust_in_names(fully)
    return {
        "named_right": float(every.mean()) if every.size else float("nan"),
        "volumes_fully_named": float(np.mean([right for right, _ in fully])),
        "volumes_names_unsure": share_unsure,
        "fully_named_when_sure": right_when_sure,
        "fully_named_when_unsure": right_when_unsure,
    }


def _level_order(per_level: dict[str, list[float]]) -> list[tuple[str, list[float]]]:
    """Levels in anatomical order (unknown names last, alphabetically)."""
    return sorted(per_level.items(), key=lambda kv: (level_rank(kv[0]), kv[0]))
