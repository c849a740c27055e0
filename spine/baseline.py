"""Classical baseline: threshold + connected components, so every model figure has a comparison.

No learning. Per volume: normalise intensities and build a few candidate foreground masks
(the classes of a multi-level Otsu split, and "brighter than the local mean" at two scales,
which cuts bodies apart along their dark cortical rims). On each sagittal slice keep the blobs
that look like vertebral bodies (area, solidity, aspect) and that line up in a vertical chain
(the spine column); the mask whose chains cover the most area wins. The kept 2D blobs are linked
across slices by 3D connectivity and numbered top to bottom, giving a label map in the same
format as Segmenter.segment_volume: int32 [S, H, W], 0 background, 1..N bodies, 1 the highest.

All sizes are in millimetres and converted with the volume's spacing, so the same parameters
work on 1 mm real scans and on phantoms of any resolution.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage import measure, morphology, segmentation
from skimage.filters import threshold_multiotsu

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaselineParams:
    """Tunable knobs of the baseline, all in millimetres (areas in mm², volumes in mm³)."""

    smooth_mm: float = 1.0  # in-plane Gaussian sigma before thresholding
    otsu_classes: int = 4  # multi-Otsu classes; bands are single classes and adjacent pairs
    local_sigmas_mm: tuple[float, ...] = (8.0, 12.0)  # scales of the local-mean masks
    min_foreground: float = 0.05  # local-mean masks ignore air below this normalised value
    open_mm: float = 5.0  # radius of the opening that breaks thin bridges between blobs
    min_area_mm2: float = 120.0  # a vertebral body cut sagittally: ~150-1500 mm²
    max_area_mm2: float = 2500.0
    min_solidity: float = 0.85  # bodies are convex; bowel, fat and muscle rarely are
    min_aspect: float = 0.35  # minor / major axis
    chain_dy_mm: tuple[float, float] = (12.0, 60.0)  # vertical gap between linked centroids
    chain_slope: float = 0.5  # |dx| <= slope * |dy| + chain_dx_mm between linked centroids
    chain_dx_mm: float = 6.0
    min_chain: int = 3  # a column needs at least this many bodies in a slice
    grow_mm: float = 2.0  # final in-plane growth of every body (never into another body)
    min_volume_mm3: float = 3000.0  # drop 3D bodies smaller than this (a body is ~15-30 cm³)


def normalize_intensity(data: np.ndarray) -> np.ndarray:
    """Scale a volume to [0, 1] between its 1st and 99th percentiles.

    data: [S, H, W] any numeric dtype. Returns float32 [S, H, W].
    """
    data = np.asarray(data, dtype=np.float32)
    lo, hi = (float(v) for v in np.percentile(data, (1.0, 99.0)))
    if hi <= lo:
        return np.zeros_like(data)
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0)


def candidate_bands(smoothed: np.ndarray, classes: int, rng_seed: int = 0) -> list[tuple]:
    """Intensity bands (lo, hi) to try: each multi-Otsu class and each adjacent pair of classes.

    The darkest class (air, cortical bone) is never a band on its own: bodies are mid-to-bright.
    smoothed: [S, H, W] float in [0, 1]. Returns a list of (lo, hi) with hi exclusive.
    """
    flat = smoothed.ravel()
    if flat.size > 400_000:  # a subsample gives the same thresholds, much faster
        flat = np.random.default_rng(rng_seed).choice(flat, 400_000, replace=False)
    try:
        cuts = list(threshold_multiotsu(flat, classes=classes))
    except ValueError:  # constant image: too few grey levels for multi-Otsu
        return []
    edges = [-np.inf, *cuts, np.inf]
    bands = [(edges[k], edges[k + 1]) for k in range(1, classes)]
    bands += [(edges[k], edges[k + 2]) for k in range(1, classes - 1)]
    return bands


def candidate_masks(
    smoothed: np.ndarray, spacing: tuple, params: BaselineParams
) -> list[tuple[str, np.ndarray]]:
    """Foreground masks to try: Otsu bands and local-contrast masks.

    smoothed: [S, H, W] float in [0, 1]. Returns [(name, bool [S, H, W])].
    """
    masks = [
        (f"band[{lo:.2f},{hi:.2f})", (smoothed >= lo) & (smoothed < hi))
        for lo, hi in candidate_bands(smoothed, params.otsu_classes)
    ]
    _, row_mm, col_mm = spacing
    for sigma in params.local_sigmas_mm:
        local_mean = ndimage.gaussian_filter(smoothed, (0.0, sigma / row_mm, sigma / col_mm))
        masks.append(
            (f"local{sigma:g}mm", (smoothed > local_mean) & (smoothed > params.min_foreground))
        )
    return masks


def _slice_candidates(
    mask: np.ndarray, px_area: float, params: BaselineParams, footprint: np.ndarray
) -> tuple[np.ndarray, list]:
    """Body-like blobs of one binary slice.

    mask: bool [H, W]. Returns (labels int32 [H, W], regionprops of the kept blobs).
    """
    mask = ndimage.binary_opening(mask, structure=footprint)
    mask = ndimage.binary_fill_holes(mask)
    labels = measure.label(mask, connectivity=1)
    kept = []
    for region in measure.regionprops(labels):
        area = region.area * px_area
        if not params.min_area_mm2 <= area <= params.max_area_mm2:
            continue
        if region.solidity < params.min_solidity:
            continue
        if region.axis_major_length <= 0:
            continue
        if region.axis_minor_length / region.axis_major_length < params.min_aspect:
            continue
        kept.append(region)
    return labels, kept


def _largest_chain(
    centroids_mm: np.ndarray, areas_mm2: np.ndarray, params: BaselineParams
) -> np.ndarray:
    """Indices of the longest vertical chain of blobs (the spine column) on one slice.

    centroids_mm: [N, (row_mm, col_mm)]; areas_mm2: [N]. Each blob links to its nearest
    neighbour below that lies 12-60 mm lower, not far sideways (the lumbar curve shifts a
    body a few mm per level) and of similar area (x0.5-x2). Returns int [K].
    """
    n = len(centroids_mm)
    if n == 0:
        return np.zeros(0, dtype=int)
    dy = centroids_mm[None, :, 0] - centroids_mm[:, None, 0]  # [N, N] j below i when > 0
    dx = np.abs(centroids_mm[None, :, 1] - centroids_mm[:, None, 1])
    ratio = areas_mm2[None, :] / areas_mm2[:, None]
    lo, hi = params.chain_dy_mm
    ok = (
        (dy >= lo)
        & (dy <= hi)
        & (dx <= params.chain_slope * dy + params.chain_dx_mm)
        & (ratio >= 0.5)
        & (ratio <= 2.0)
    )
    dist = np.where(ok, np.hypot(dy, dx), np.inf)
    src = np.flatnonzero(np.isfinite(dist).any(axis=1))
    dst = np.argmin(dist[src], axis=1)
    link = coo_matrix((np.ones(src.size), (src, dst)), shape=(n, n))
    _, comp = connected_components(link, directed=False)
    sizes = np.bincount(comp)
    return np.flatnonzero(comp == np.argmax(sizes))


def _column_masks(
    band_mask: np.ndarray, spacing: tuple, params: BaselineParams
) -> tuple[np.ndarray, float]:
    """Per slice, the body-like blobs that form the spine column.

    band_mask: bool [S, H, W]. Returns (kept bool [S, H, W], score = chain area in mm²).
    """
    _, row_mm, col_mm = spacing
    px_area = row_mm * col_mm
    radius = max(1, int(round(params.open_mm / min(row_mm, col_mm))))
    footprint = morphology.disk(radius)
    kept = np.zeros_like(band_mask, dtype=bool)
    score = 0.0
    for s in range(band_mask.shape[0]):
        labels, regions = _slice_candidates(band_mask[s], px_area, params, footprint)
        if len(regions) < params.min_chain:
            continue
        cents = np.array([r.centroid for r in regions]) * np.array([row_mm, col_mm])
        areas = np.array([r.area for r in regions], dtype=np.float64) * px_area
        chain = _largest_chain(cents, areas, params)
        if len(chain) < params.min_chain:
            continue
        score += sum(regions[i].area for i in chain) * px_area
        kept[s] = np.isin(labels, [regions[i].label for i in chain])
    return kept, score


def _number_bodies(kept: np.ndarray, spacing: tuple, params: BaselineParams) -> np.ndarray:
    """Link kept 2D blobs across slices (face connectivity) and number them top to bottom.

    kept: bool [S, H, W]. Returns int32 [S, H, W], 1 = highest body (smallest mean row).
    """
    labels3d, n = ndimage.label(kept)  # 6-connectivity: blobs link when they overlap in-plane
    out = np.zeros(kept.shape, dtype=np.int32)
    if n == 0:
        return out
    voxel_mm3 = float(np.prod(spacing))
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(kept, labels3d, index) * voxel_mm3
    rows = np.array([c[1] for c in ndimage.center_of_mass(kept, labels3d, index)])
    good = [
        (row, lab)
        for row, lab, size in zip(rows, index, sizes, strict=True)
        if size >= params.min_volume_mm3
    ]
    for new, (_, lab) in enumerate(sorted(good), start=1):
        out[labels3d == lab] = new
    if params.grow_mm > 0:  # thresholds miss the dark cortical rim: grow each body into it
        steps = max(1, int(round(params.grow_mm / min(spacing[1:]))))
        out = np.stack([segmentation.expand_labels(s, steps) for s in out])
    return out


def segment_baseline(
    data: np.ndarray, spacing: tuple = (1.0, 1.0, 1.0), params: BaselineParams | None = None
) -> np.ndarray:
    """Label the vertebral bodies of a sagittal volume without a model.

    data: [S, H, W] sagittal slices in display orientation (rows top to bottom).
    spacing: (slice_mm, row_mm, col_mm). Returns int32 [S, H, W], 0 background, bodies 1..N
    numbered top to bottom. The candidate mask whose columns cover the most area wins.
    """
    params = params or BaselineParams()
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"expected a [S, H, W] volume, got shape {data.shape}")
    _, row_mm, col_mm = spacing
    sigma = (0.0, params.smooth_mm / row_mm, params.smooth_mm / col_mm)
    smoothed = ndimage.gaussian_filter(normalize_intensity(data), sigma=sigma)
    best_kept, best_score = np.zeros(data.shape, dtype=bool), 0.0
    for name, mask in candidate_masks(smoothed, spacing, params):
        kept, score = _column_masks(mask, spacing, params)
        log.debug("baseline mask %s: chain area %.0f mm²", name, score)
        if score > best_score:
            best_kept, best_score = kept, score
    return _number_bodies(best_kept, spacing, params)


def segment_volume_baseline(volume, params: BaselineParams | None = None) -> np.ndarray:
    """Baseline label map of a spine.volume.Volume (uses its data [S, H, W] and spacing)."""
    return segment_baseline(volume.data, tuple(float(v) for v in volume.spacing), params)
