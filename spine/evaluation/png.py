"""spine-evaluate on an images/ + masks/ PNG folder: one slice per image, through the app's code.

Each image becomes a one-slice Volume (spine.volume.volume_from_image) and goes through
Segmenter.segment_slice, exactly as a PNG or one-slice scan goes through the page, so the
names and confidences scored are the ones a user sees. The classical baseline runs beside it.

Per ground-truth body (spine.png_folder gives bodies and their levels), with
spine.evaluation.metrics.score_slice:
- Dice with the predicted body that overlaps it most; found when Dice > 0.5 (level folders)
  or, for SPIDER-style semantic masks whose "bodies" are cut from whole-vertebra labels,
  when a prediction lies >= 50 % inside it (the issue's criterion);
- named right when that prediction carries the body's level name.
Per slice: fully right (every labelled body found and named right), false bodies
(predictions matching no labelled body, outside the unlabelled ranges above and below).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spine.evaluation.metrics import score_slice, trust_in_names
from spine.levels import level_rank


@dataclass
class SliceScore:
    """What one method did on one slice."""

    name: str
    patient: str
    levels: list[str]  # ground-truth levels, top to bottom
    dice: list[float]  # per ground-truth body
    found: list[bool]
    named: list[bool]  # found and named right
    predicted: list[str]  # predicted names, top to bottom
    confidence: list[float]  # their name confidences
    false_bodies: int
    seconds: float

    @property
    def fully_right(self) -> bool:
        return bool(self.levels) and all(self.named)

    @property
    def names_unsure(self) -> bool:
        """Some name on this slice is shown as unsure (spine.pipeline.name_is_unsure)."""
        from spine.pipeline import name_is_unsure

        return any(name_is_unsure(c) for c in self.confidence)


@dataclass
class FolderEvaluation:
    """All slices of one folder for one method, and the summary figures."""

    method: str
    kind: str
    slices: list[SliceScore] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        bodies = [(lv, d, f, n) for s in self.slices for lv, d, f, n in
                  zip(s.levels, s.dice, s.found, s.named, strict=True)]  # fmt: skip
        n = max(len(bodies), 1)
        s1 = [f for lv, _, f, _ in bodies if lv == "S1"]
        lumbar = [(f, nm) for lv, _, f, nm in bodies if lv in THORACOLUMBAR]
        per_level: dict[str, dict[str, float]] = {}
        for level in sorted({b[0] for b in bodies}, key=level_rank):
            rows = [b for b in bodies if b[0] == level]
            per_level[level] = {
                "bodies": len(rows),
                "dice": float(np.mean([b[1] for b in rows])),
                "found": float(np.mean([b[2] for b in rows])),
                "named": float(np.mean([b[3] for b in rows])),
            }
        found_lumbar = [nm for f, nm in lumbar if f]
        unsure, right_when_sure, right_when_unsure = trust_in_names(
            [(s.fully_right, s.names_unsure) for s in self.slices]
        )
        return {
            "slices": len(self.slices),
            "bodies": len(bodies),
            "body_dice": float(sum(b[1] for b in bodies) / n),
            "recall": float(sum(b[2] for b in bodies) / n),
            "named_right": float(sum(b[3] for b in bodies) / n),
            "slices_fully_right": float(np.mean([s.fully_right for s in self.slices]))
            if self.slices else float("nan"),
            "s1_found": float(np.mean(s1)) if s1 else None,
            "s1_bodies": len(s1),
            "t12_l5_found": float(np.mean([f for f, _ in lumbar])) if lumbar else None,
            "t12_l5_named_of_found": float(np.mean(found_lumbar)) if found_lumbar else None,
            "slices_names_unsure": unsure,
            "fully_right_when_sure": right_when_sure,
            "fully_right_when_unsure": right_when_unsure,
            "false_per_slice": float(np.mean([s.false_bodies for s in self.slices]))
            if self.slices else float("nan"),
            "seconds_per_slice": float(np.mean([s.seconds for s in self.slices]))
            if self.slices else float("nan"),
            "per_level": per_level,
        }


THORACOLUMBAR = ("T12", "L1", "L2", "L3", "L4", "L5")


def ignore_zone(bodies: Any) -> np.ndarray:
    """bool [H, W]: the unlabelled ranges above/below the labelled bodies (training's ignore
    regions, spine.dataset.unlabelled_regions), where a prediction is not counted false."""
    from spine.dataset import unlabelled_regions
    from spine.volume import label_instances

    masks, _ = label_instances(bodies.labels)
    if masks.shape[-1] == 0:
        return np.zeros(bodies.labels.shape, bool)
    regions = unlabelled_regions(masks, bodies.unlabelled_above, bodies.unlabelled_below)
    return regions.any(axis=-1)


def evaluate_png_folder(
    folder: str | Path,
    segmenter: Any = None,
    patients: Sequence[str] | None = None,
    min_score: float = 0.0,
    baseline: bool = True,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, FolderEvaluation]:
    """Score the model (if given) and the baseline on a PNG folder's slices."""
    from tqdm import tqdm

    from spine.baseline import segment_volume_baseline
    from spine.pipeline import build_slice_result
    from spine.png_folder import read_png_folder
    from spine.volume import label_instances, volume_from_image

    items = read_png_folder(folder)
    if patients is not None:
        wanted = set(patients)
        items = [i for i in items if i.patient in wanted]
    items = items[:limit] if limit is not None else items
    kind = items[0].kind if items else "levels"
    results = {m: FolderEvaluation(m, kind) for m in (["model"] if segmenter else [])}
    if baseline:
        results["baseline"] = FolderEvaluation("baseline", kind)
    for item in tqdm(items, desc="evaluate", unit="slice", disable=not progress):
        bodies = item.load_bodies()
        volume = volume_from_image(item.load_image(), name=item.name)
        ignore = ignore_zone(bodies)
        for method, evaluation in results.items():
            start = time.perf_counter()
            if method == "model":
                result = segmenter.segment_slice(volume, 0, min_score=min_score)
            else:
                labels = segment_volume_baseline(volume)[0]
                masks, _ = label_instances(labels)
                result = build_slice_result(0, masks, np.ones(masks.shape[-1]), (1.0, 1.0))
            seconds = time.perf_counter() - start
            dice, found, named, false = score_slice(
                bodies.labels, bodies.levels, result.masks, result.levels,
                semantic=kind == "spider", ignore=ignore,
            )  # fmt: skip
            evaluation.slices.append(
                SliceScore(
                    item.name, item.patient, list(bodies.levels), dice, found, named,
                    list(result.levels), [round(c, 3) for c in result.name_confidence],
                    false, seconds,
                )  # fmt: skip
            )
    return results
