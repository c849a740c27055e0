"""Naming vertebrae (L5, L4, ..., S1) from their order along the spine.

The network finds vertebral bodies and, as a class of its own, S1 (the top sacral body).
name_from_evidence counts up from S1 when it is found and gives every name a confidence;
without S1 in view names are counted from the lowest body found (L5 unless the user says
otherwise), with a low confidence and a note that says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Top to bottom. Above C1 (only reached for very long series) names are X1, X2, ... upward.
SPINE_LEVELS: list[str] = (
    [f"C{i}" for i in range(1, 8)]
    + [f"T{i}" for i in range(1, 13)]
    + [f"L{i}" for i in range(1, 6)]
    + [f"S{i}" for i in range(1, 6)]
    + [f"Co{i}" for i in range(1, 5)]
)


def level_names(count: int, lowest: str = "L5") -> list[str]:
    """Names of `count` vertebrae top to bottom whose lowest is `lowest`.

    level_names(5) -> L1..L5; level_names(7) -> T11..L5; level_names(2, "S1") -> L5, S1.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if lowest not in SPINE_LEVELS:
        raise ValueError(f"unknown level {lowest!r}; use one of {', '.join(SPINE_LEVELS)}")
    end = SPINE_LEVELS.index(lowest) + 1
    names = SPINE_LEVELS[max(0, end - count) : end]
    extra = count - len(names)
    return [f"X{k}" for k in range(extra, 0, -1)] + names


def centroids(masks_or_boxes: np.ndarray) -> np.ndarray:
    """Instance masks bool [H, W, N] or boxes [N, (y1, x1, y2, x2)] -> centres [N, (y, x)]."""
    arr = np.asarray(masks_or_boxes)
    if arr.ndim == 2 and arr.shape[-1] == 4 and arr.dtype != bool:
        return np.stack([(arr[:, 0] + arr[:, 2]) / 2.0, (arr[:, 1] + arr[:, 3]) / 2.0], axis=1)
    if arr.ndim != 3:
        raise ValueError(f"expected masks [H, W, N] or boxes [N, 4], got shape {arr.shape}")
    out = np.full((arr.shape[-1], 2), np.nan)
    for i in range(arr.shape[-1]):
        ys, xs = np.nonzero(arr[..., i])
        if len(ys):
            out[i] = ys.mean(), xs.mean()
    return out


def order_top_to_bottom(masks_or_boxes: np.ndarray) -> np.ndarray:
    """Indices sorting instances (masks [H, W, N] or boxes [N, 4]) by centroid row, top first.

    Rows run superior -> inferior in the display layout, so this is cranial -> caudal; ties
    (and empty masks, which go last) keep their input order.
    """
    rows = centroids(masks_or_boxes)[:, 0]
    rows = np.where(np.isnan(rows), np.inf, rows)
    return np.argsort(rows, kind="stable")


def level_rank(name: str) -> int:
    """A level's place top to bottom (C1 = 0); unknown names after every level."""
    return SPINE_LEVELS.index(name) if name in SPINE_LEVELS else len(SPINE_LEVELS)


# ----------------------------------------------------------------------------- from evidence
# Naming confidence when no S1 is in view: the count from the lowest body is a guess.
UNANCHORED_CONFIDENCE = 0.3
# Detections whose S1-class evidence reaches this count as S1.
S1_MIN_EVIDENCE = 0.5
# A gap between two neighbouring bodies larger than this many median gaps suggests a body
# was missed (or two were merged): names across it lose confidence.
GAP_FACTOR = 1.6
GAP_PENALTY = 0.5


@dataclass
class LevelNaming:
    """Names of bodies top to bottom, each with a confidence in [0, 1], and a note for the
    user that says what the names rest on (empty when they rest on a found S1 and a regular
    spacing)."""

    names: list[str]
    confidence: list[float]
    anchored: bool
    note: str = ""


def name_from_evidence(
    rows: np.ndarray, s1_evidence: np.ndarray, fallback_lowest: str = "L5"
) -> LevelNaming:
    """Name bodies ordered top to bottom from S1 upward when S1 is found.

    rows: centre row of each body [N] (top to bottom). s1_evidence: [N] in [0, 1], how
    strongly the network called each body S1 (its S1-class score, 0 for a plain body).
    With an S1 (evidence >= S1_MIN_EVIDENCE; the strongest wins) it is named S1, the bodies
    above L5, L4, ... and those below S2, ...; a body's confidence is S1's evidence, halved
    for every suspicious gap (> GAP_FACTOR x the median gap) between it and S1. Without an
    S1, names are counted from the lowest body (`fallback_lowest`) at UNANCHORED_CONFIDENCE
    and the note says so.
    """
    rows = np.asarray(rows, dtype=np.float64)
    evidence = np.asarray(s1_evidence, dtype=np.float64)
    n = len(rows)
    if n == 0:
        return LevelNaming([], [], anchored=False)
    candidates = np.flatnonzero(evidence >= S1_MIN_EVIDENCE)
    if candidates.size == 0:
        return LevelNaming(
            names=level_names(n, fallback_lowest),
            confidence=[UNANCHORED_CONFIDENCE] * n,
            anchored=False,
            note=(
                f"No S1 found in view: names are counted up from the lowest body, taken as "
                f"{fallback_lowest}; a missed or extra body shifts every name."
            ),
        )
    anchor = int(candidates[np.argmax(evidence[candidates])])
    s1_rank = SPINE_LEVELS.index("S1")
    names = []
    for k in range(n):
        rank = s1_rank + (k - anchor)
        names.append(SPINE_LEVELS[rank] if 0 <= rank < len(SPINE_LEVELS) else f"X{-rank}")
    gaps = np.diff(rows)  # [N-1], gap k between bodies k and k+1
    suspicious = gaps > GAP_FACTOR * np.median(gaps) if gaps.size >= 2 else np.zeros(0, bool)
    confidence = []
    for k in range(n):
        between = suspicious[min(k, anchor) : max(k, anchor)]
        confidence.append(float(evidence[anchor]) * GAP_PENALTY ** int(between.sum()))
    note = ""
    if suspicious.any():
        note = "A gap between two bodies suggests a missed body: names across it are less sure."
    if len(candidates) > 1:
        more = "More than one body looked like S1; the strongest was used."
        note = f"{note} {more}" if note else more
    return LevelNaming(names, confidence, anchored=True, note=note)
