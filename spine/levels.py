"""Naming vertebrae (L5, L4, ..., S1) from their order along the spine.

The network finds "a vertebra"; which one it is follows from the order top to bottom and an
assumption about the lowest one found (L5 by default: both real datasets end at L5).
"""

from __future__ import annotations

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


def name_instances(masks_or_boxes: np.ndarray, lowest: str = "L5") -> list[str]:
    """A level name per instance in input order (the lowest instance gets `lowest`)."""
    order = order_top_to_bottom(masks_or_boxes)
    names = level_names(len(order), lowest)
    out = [""] * len(order)
    for rank, idx in enumerate(order):
        out[int(idx)] = names[rank]
    return out
