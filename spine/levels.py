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
    return [_name_at(rank) for rank in range(end - count, end)]


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
# Two outlines whose centres lie closer than this many vertebral spacings are one vertebra
# seen twice (pieces of one body that the slices did not link, or a body and a piece of its
# own arch): neighbouring vertebrae lie a whole spacing apart. They share one level name.
SAME_LEVEL_FRACTION = 0.5


@dataclass
class LevelNaming:
    """Names of bodies top to bottom, each with a confidence in [0, 1], and a note for the
    user that says what the names rest on (empty when they rest on a found S1 and a regular
    spacing)."""

    names: list[str]
    confidence: list[float]
    anchored: bool
    note: str = ""


def vertebral_spacing(rows: np.ndarray) -> float:
    """The centre-to-centre distance of neighbouring vertebrae, from bodies' centre rows [N]
    (sorted): the median gap, taken again over the gaps of at least half of it, so that
    outlines of one vertebra seen twice (gaps near 0) do not pull it down. NaN for N < 2."""
    gaps = np.diff(np.sort(np.asarray(rows, dtype=np.float64)))
    if gaps.size == 0:
        return float("nan")
    wide = gaps[gaps >= 0.5 * np.median(gaps)]
    return float(np.median(wide))


def level_steps(rows: np.ndarray, anchor: int) -> np.ndarray:
    """Levels of bodies ordered top to bottom, as steps from the anchor body's level [N]
    (0 for the anchor, -1 the level above it, +1 the one below).

    Walking away from the anchor, a body starts a new level only when its centre lies at
    least SAME_LEVEL_FRACTION x vertebral_spacing from the first body of the current level;
    closer ones are the same vertebra seen twice and share its level.
    """
    rows = np.asarray(rows, dtype=np.float64)
    steps = np.zeros(len(rows), dtype=np.int64)
    spacing = vertebral_spacing(rows)
    if not np.isfinite(spacing) or spacing <= 0:
        return np.arange(len(rows)) - anchor
    for direction in (-1, 1):
        level, level_row = 0, rows[anchor]
        k = anchor + direction
        while 0 <= k < len(rows):
            if abs(rows[k] - level_row) >= SAME_LEVEL_FRACTION * spacing:
                level, level_row = level + direction, rows[k]
            steps[k] = level
            k += direction
    return steps


def name_with_pieces(
    rows: np.ndarray, s1_evidence: np.ndarray, piece: np.ndarray, fallback_lowest: str = "L5"
) -> LevelNaming:
    """name_from_evidence, where the outlines flagged in piece [N] (bool: small pieces, such
    as an outline seen on one or two slices of a volume) take no level of their own: the
    others are named, and each piece takes the name of the body nearest to it along the
    spine, at half that body's confidence. A piece that looks like S1 (evidence >=
    S1_MIN_EVIDENCE) still counts: S1 is often seen on few slices. Without any other body,
    the pieces are named as name_from_evidence would.
    """
    rows = np.asarray(rows, dtype=np.float64)
    evidence = np.asarray(s1_evidence, dtype=np.float64)
    piece = np.asarray(piece, dtype=bool) & (evidence < S1_MIN_EVIDENCE)
    counted = np.flatnonzero(~piece)
    if not piece.any() or counted.size == 0:
        return name_from_evidence(rows, evidence, fallback_lowest)
    base = name_from_evidence(rows[counted], evidence[counted], fallback_lowest)
    names: list[str] = [""] * len(rows)
    confidence = [0.0] * len(rows)
    for j, k in enumerate(counted):
        names[k], confidence[k] = base.names[j], base.confidence[j]
    for k in np.flatnonzero(piece):
        nearest = counted[np.argmin(np.abs(rows[counted] - rows[k]))]
        names[k], confidence[k] = names[nearest], confidence[nearest] * GAP_PENALTY
    note = " ".join(
        part
        for part in (
            base.note,
            "Small pieces (outlines seen on one or two slices) take no level of their own: "
            "each shares the name of the nearest vertebra, with less confidence.",
        )
        if part
    )
    return LevelNaming(names, confidence, anchored=base.anchored, note=note)


def name_from_evidence(
    rows: np.ndarray, s1_evidence: np.ndarray, fallback_lowest: str = "L5"
) -> LevelNaming:
    """Name bodies ordered top to bottom from S1 upward when S1 is found.

    rows: centre row of each body [N] (top to bottom). s1_evidence: [N] in [0, 1], how
    strongly the network called each body S1 (its S1 probability, spine.pipeline).
    With an S1 (evidence >= S1_MIN_EVIDENCE; the strongest wins) it is named S1, the bodies
    above L5, L4, ... and those below S2, ...; a body's confidence is S1's evidence, halved
    for every suspicious gap (> GAP_FACTOR x vertebral_spacing) between it and S1, and
    halved for a body that shares its level with another (level_steps: one vertebra seen
    twice), and halved for every body when bodies of two levels look like S1 (a possible
    lumbosacral transitional vertebra). Without an S1, names are counted from the lowest
    body (`fallback_lowest`), the same way, at UNANCHORED_CONFIDENCE, and the note says so.
    """
    rows = np.asarray(rows, dtype=np.float64)
    evidence = np.asarray(s1_evidence, dtype=np.float64)
    n = len(rows)
    if n == 0:
        return LevelNaming([], [], anchored=False)
    candidates = np.flatnonzero(evidence >= S1_MIN_EVIDENCE)
    anchored = candidates.size > 0
    if anchored:
        anchor = int(candidates[np.argmax(evidence[candidates])])
        anchor_name, anchor_confidence = "S1", float(evidence[anchor])
    else:
        anchor, anchor_name, anchor_confidence = n - 1, fallback_lowest, UNANCHORED_CONFIDENCE
    steps = level_steps(rows, anchor)
    names = [_name_at(SPINE_LEVELS.index(anchor_name) + int(step)) for step in steps]
    shared = np.isin(steps, steps[np.flatnonzero(np.diff(steps) == 0)])  # [N] level seen twice
    if not anchored:
        note = (
            f"No S1 found in view: names are counted up from the lowest body, taken as "
            f"{fallback_lowest}; a missed or extra body shifts every name."
        )
        return LevelNaming(names, [anchor_confidence] * n, anchored=False, note=note)
    gaps = np.diff(rows)  # [N-1], gap k between bodies k and k+1
    suspicious = gaps > GAP_FACTOR * vertebral_spacing(rows) if gaps.size >= 2 else gaps > np.inf
    # Bodies of two different levels that both look like S1: where the lumbar spine ends is
    # in doubt (a transitional vertebra, or a sacrum-like L5), so every name is.
    transitional = len(set(steps[candidates].tolist())) > 1
    confidence = []
    for k in range(n):
        between = suspicious[min(k, anchor) : max(k, anchor)]
        penalties = int(between.sum()) + int(shared[k]) + int(transitional)
        confidence.append(anchor_confidence * GAP_PENALTY**penalties)
    notes = []
    if suspicious.any():
        notes.append(
            "A gap between two bodies suggests a missed body: names across it are less sure."
        )
    if shared.any():
        notes.append(
            "Two outlines lie at one level (one vertebra seen twice): they share its name, "
            "with less confidence."
        )
    if transitional:
        notes.append(
            "More than one body looked like S1; the strongest was used. This can be a "
            "lumbosacral transitional vertebra (a sacralised L5 or a lumbarised S1): every "
            "name is less sure; confirm the count on a view that shows the whole spine."
        )
    return LevelNaming(names, confidence, anchored=True, note=" ".join(notes))


def _name_at(rank: int) -> str:
    """The level at a place top to bottom (SPINE_LEVELS); above C1, X1, X2, ... upward."""
    return SPINE_LEVELS[rank] if 0 <= rank < len(SPINE_LEVELS) else f"X{-rank}"
