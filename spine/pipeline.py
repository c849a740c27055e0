"""From a scan to named vertebra masks: the one entry used by the app and the CLIs.

    segmenter = load_segmenter()                       # weights/ + configs/demo.toml
    result = segmenter.segment_volume(volume, progress=lambda done, total: ...)
    result.measurements()                              # level, score, volume mm3, height mm
    export.volume_labels_nifti(volume, result)         # label map in the input's geometry

Masks always come back on the native slice grid of the volume (model.detect undoes its own
resize and padding), so a mask pixel is the voxel it was predicted for.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spine.errors import InvalidScanError, MissingWeightsError, SpineInputError

if TYPE_CHECKING:
    from mrcnn.config import Config
    from spine.volume import Volume

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = REPO_ROOT / "weights" / "spineseg_demo.weights.h5"
DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo.toml"
# Environment variables that choose the model when no argument is given (tests, deployments).
WEIGHTS_ENV = "SPINESEG_WEIGHTS"
CONFIG_ENV = "SPINESEG_CONFIG"

# Slices per model.detect call in segment_volume (progress is reported after each call).
VOLUME_BATCH = 4

ProgressCallback = Callable[[int, int], None]
# Columns of SliceResult.measurements() and VolumeResult.measurements().
SLICE_COLUMNS = ("level", "name_confidence", "score", "area_mm2", "height_mm", "name_note")
VOLUME_COLUMNS = (
    "level", "name_confidence", "score", "volume_mm3", "height_mm", "slices", "name_note"
)  # fmt: skip
# Below this name confidence a table row carries the naming note (the CSV says why).
UNSURE_NAME = 0.5
# What a user-chosen lowest level makes of the naming note and confidences.
USER_NAMING_NOTE = "Names set by you: the lowest body found is {lowest}, the others counted up."


# ----------------------------------------------------------------------------- results
@dataclass
class SliceResult:
    """Detections on one sagittal slice, ordered top (superior) to bottom.

    masks: bool [H, W, N] on the native slice grid. boxes: int32 [N, (y1, x1, y2, x2)] pixels,
    y2/x2 exclusive. scores: float32 [N]. levels: N names (e.g. "L1".."S1"), with
    name_confidence [N] in [0, 1] and naming_note (what the names rest on; spine.levels).
    s1_evidence: float32 [N], the network's S1-class score per body (0 for a plain body).
    spacing: (row_mm, col_mm) of the slice's pixels.
    """

    index: int
    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    levels: list[str]
    spacing: tuple[float, float]
    name_confidence: list[float] = field(default_factory=list)
    naming_note: str = ""
    s1_evidence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def count(self) -> int:
        return len(self.levels)

    def renamed(self, lowest: str | None) -> SliceResult:
        """The same result with the lowest vertebra named `lowest` (the user's override,
        e.g. "L5"; names follow the order top to bottom, no need to run the model again).
        None keeps the names from the evidence."""
        if lowest is None:
            return self
        return replace(self, **user_naming(self.count, lowest))

    def label_map(self) -> np.ndarray:
        """int32 [H, W]: 0 background, k for the k-th vertebra from the top."""
        return masks_to_labels(self.masks, self.scores)

    def measurements(self) -> list[dict[str, Any]]:
        """One row per vertebra: level, score, area_mm2, height_mm (see body_height_mm)."""
        row_mm, col_mm = self.spacing
        rows = []
        for k, level in enumerate(self.levels):
            mask = self.masks[..., k]
            rows.append(
                {
                    "level": level,
                    "name_confidence": _confidence(self.name_confidence, k),
                    "score": round(float(self.scores[k]), 3),
                    "area_mm2": round(float(mask.sum()) * row_mm * col_mm, 1),
                    "height_mm": round(body_height_mm(mask, row_mm, col_mm), 1),
                    "name_note": _unsure_note(self.name_confidence, k, self.naming_note),
                }
            )
        return rows


@dataclass
class VolumeResult:
    """Vertebral bodies linked through the volume, numbered top to bottom.

    labels: int32 [S, H, W], 0 background, k the k-th body from the top (same body, same
    label on every slice). levels: names of labels 1..N. scores: float32 [N], mean detection
    score of each body over its slices. spacing: (slice_mm, row_mm, col_mm).
    slice_scores: {slice index: float32 [N]} detection score of each body on that slice
    (0 where the body is absent), used for per-slice exports. name_confidence, naming_note,
    s1_evidence: as in SliceResult, per body (S1 evidence area-weighted over its slices).
    """

    labels: np.ndarray
    levels: list[str]
    scores: np.ndarray
    spacing: tuple[float, float, float]
    slice_scores: dict[int, np.ndarray] = field(default_factory=dict)
    name_confidence: list[float] = field(default_factory=list)
    naming_note: str = ""
    s1_evidence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    # Every slice's (masks, scores) at any score, when asked for (segment_volume).
    detections: list[tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def count(self) -> int:
        return len(self.levels)

    def renamed(self, lowest: str | None) -> VolumeResult:
        """The same bodies with the lowest one named `lowest` (see SliceResult.renamed)."""
        if lowest is None:
            return self
        return replace(self, **user_naming(self.count, lowest))

    def slice_result(self, index: int) -> SliceResult:
        """The bodies present on one slice as a SliceResult (labels keep their volume order)."""
        label_slice = self.labels[index]
        ids = np.unique(label_slice)
        ids = ids[ids > 0].astype(np.int32)  # bodies on this slice, top to bottom
        present = ids.tolist()
        masks = label_slice[..., None] == ids[None, None, :]  # [H, W, n]
        boxes = boxes_from_masks(masks)
        scores = self.slice_scores.get(index, self.scores)
        return SliceResult(
            index=index,
            masks=masks,
            boxes=boxes,
            scores=np.asarray([scores[k - 1] for k in present], dtype=np.float32),
            levels=[self.levels[k - 1] for k in present],
            spacing=(self.spacing[1], self.spacing[2]),
            name_confidence=[_confidence(self.name_confidence, k - 1) for k in present],
            naming_note=self.naming_note,
            s1_evidence=np.asarray(
                [self.s1_evidence[k - 1] if len(self.s1_evidence) else 0.0 for k in present],
                np.float32,
            ),
        )

    def measurements(self) -> list[dict[str, Any]]:
        """One row per body: level, score, volume_mm3, height_mm (on its largest slice), slices."""
        slice_mm, row_mm, col_mm = self.spacing
        n = self.count
        voxels = np.bincount(self.labels.ravel(), minlength=n + 1)[1:]  # [N]
        # Area of every body on every slice: [S, N]; the largest slice is its mid-body slice.
        per_slice = np.stack(
            [np.bincount(s.ravel(), minlength=n + 1)[1 : n + 1] for s in self.labels]
        )
        rows = []
        for k in range(1, n + 1):
            best = int(np.argmax(per_slice[:, k - 1]))
            rows.append(
                {
                    "level": self.levels[k - 1],
                    "name_confidence": _confidence(self.name_confidence, k - 1),
                    "score": round(float(self.scores[k - 1]), 3),
                    "volume_mm3": round(float(voxels[k - 1]) * slice_mm * row_mm * col_mm, 1),
                    "height_mm": round(body_height_mm(self.labels[best] == k, row_mm, col_mm), 1),
                    "slices": int(np.count_nonzero(per_slice[:, k - 1])),
                    "name_note": _unsure_note(self.name_confidence, k - 1, self.naming_note),
                }
            )
        return rows


def user_naming(count: int, lowest: str) -> dict[str, Any]:
    """Result fields for names counted up from a lowest level the user chose: confidence 1
    (the user's call, not the model's) and a note that says so."""
    from spine.levels import level_names

    return {
        "levels": list(level_names(count, lowest)),
        "name_confidence": [1.0] * count,
        "naming_note": USER_NAMING_NOTE.format(lowest=lowest),
    }


def _unsure_note(values: Sequence[float], k: int, note: str) -> str:
    """The naming note for a row whose name confidence is below UNSURE_NAME, else ""."""
    return note if k < len(values) and values[k] < UNSURE_NAME else ""


def _confidence(values: Sequence[float], k: int) -> float | None:
    """values[k] rounded for tables, None when the result carries no confidences."""
    return round(float(values[k]), 2) if k < len(values) else None


# ----------------------------------------------------------------------------- model
def resolve_model_paths(
    weights: str | Path | None = None, config: str | Path | Config | None = None
) -> tuple[Path, Path | Config]:
    """The weights and config to use: arguments, else $SPINESEG_WEIGHTS/$SPINESEG_CONFIG,
    else the bundled weights/spineseg_demo.weights.h5 with configs/demo.toml."""
    weights_path = Path(weights or os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS)
    if config is None:
        config = Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    elif isinstance(config, str):
        config = Path(config)
    return weights_path, config


def missing_weights_message(weights: Path) -> str:
    """What to do when the model weights are not there (we never download at run time)."""
    return (
        f"Model weights not found: {weights}. Train a model with `spine-train` (see README) "
        f"and pass its weights, or download the release file {DEFAULT_WEIGHTS.name} and put "
        f"it in {DEFAULT_WEIGHTS.parent}/."
    )


def load_model_config(config_src: Path | Config, weights_path: Path) -> Config:
    """The Config the weights were trained with: a Config as given, or read from its TOML.

    Raises MissingWeightsError (a SpineInputError) if the file is missing or not valid.
    """
    from spine.config import SpineConfig

    if not isinstance(config_src, Path):
        return config_src
    if not config_src.is_file():
        raise MissingWeightsError(
            f"Model config not found: {config_src}. It is the TOML file the weights "
            f"{weights_path.name} were trained with; pass it with --config (CLI) or "
            f"${CONFIG_ENV}."
        )
    try:
        return SpineConfig.from_toml(config_src)
    except (ValueError, OSError) as exc:
        raise MissingWeightsError(f"Model config {config_src} is not valid: {exc}") from exc


def load_segmenter(
    weights: str | Path | None = None, config: str | Path | Config | None = None
) -> Segmenter:
    """Build the inference model once and load its weights.

    Raises MissingWeightsError (a SpineInputError) if the weights or config file is missing
    or the weights do not fit the config; never falls back to an untrained model.
    """
    weights_path, config_src = resolve_model_paths(weights, config)
    if not weights_path.is_file():
        raise MissingWeightsError(missing_weights_message(weights_path))
    cfg = load_model_config(config_src, weights_path)
    # Inference: one image per step; detect() batches any number of slices internally.
    cfg = cfg.replace(GPU_COUNT=1, IMAGES_PER_GPU=1)

    from mrcnn.model import MaskRCNN

    model = MaskRCNN(mode="inference", config=cfg, model_dir=str(weights_path.parent))
    try:
        model.load_weights(str(weights_path))
    except (ValueError, OSError, KeyError) as exc:
        raise MissingWeightsError(
            f"Model weights {weights_path} could not be loaded with config {config_src}: {exc}. "
            "Use the config file the weights were trained with."
        ) from exc
    logger.info("loaded %s (%s, %s px)", weights_path, cfg.BACKBONE, cfg.IMAGE_MAX_DIM)
    return Segmenter(model, cfg, weights_path)


class Segmenter:
    """A loaded Mask R-CNN plus everything between a Volume and named vertebra masks.

    One Segmenter may serve several threads (the app shares one per server): calls into
    the network are serialised with a lock.
    """

    def __init__(self, model: Any, config: Config, weights_path: Path | None = None) -> None:
        self.model = model
        self.config = config
        self.weights_path = weights_path
        self._lock = threading.Lock()

    def detect_slices(
        self, volume: Volume, indices: Sequence[int], stack: np.ndarray | None = None
    ) -> list[dict[str, Any]]:
        """model.detect on the given slices in one call -> Matterport result dicts.

        stack: the volume already windowed by model_stack (computed here when None).
        """
        from spine.config import uses_neighbours
        from spine.volume import slice_channels

        stack = model_stack(volume) if stack is None else stack
        neighbours = uses_neighbours(self.config)
        images = [slice_channels(stack, i, neighbours) for i in indices]  # [H, W, 3] each
        with self._lock:
            return self.model.detect(images, verbose=0)

    def segment_slice(self, volume: Volume, index: int, min_score: float = 0.0) -> SliceResult:
        """Vertebrae on one sagittal slice, ordered and named top to bottom."""
        from spine.volume import check_sagittal

        check_sagittal(volume)  # the model is sagittal: refuse axial/coronal with a reason
        if not 0 <= index < volume.num_slices:
            raise InvalidScanError(
                f"slice {index} does not exist: {volume.name} has slices 0-{volume.num_slices - 1}"
            )
        (detection,) = self.detect_slices(volume, [index])
        masks, scores, s1 = clean_detections(detection, min_score)
        return build_slice_result(index, masks, scores, volume.spacing[1:], s1)

    def segment_volume(
        self,
        volume: Volume,
        progress: ProgressCallback | None = None,
        min_score: float = 0.0,
        batch: int = VOLUME_BATCH,
        keep_detections: bool = False,
    ) -> VolumeResult:
        """Every slice, linked into bodies that keep one label through the volume.

        Slices go through model.detect `batch` at a time; progress(done, total) is called
        once with 0 before the first call and after each call. keep_detections: also keep
        every slice's detections below min_score in result.detections (for evaluation's AP,
        so that spine-evaluate scores exactly this code).
        """
        from spine.volume import check_sagittal

        check_sagittal(volume)
        total = volume.num_slices
        stack = model_stack(volume)
        per_slice: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        raw: list[tuple[np.ndarray, np.ndarray]] = []
        if progress:
            progress(0, total)
        for start in range(0, total, batch):
            indices = list(range(start, min(start + batch, total)))
            for detection in self.detect_slices(volume, indices, stack):
                per_slice.append(clean_detections(detection, min_score))
                if keep_detections:
                    raw.append(clean_detections(detection)[:2])
            if progress:
                progress(indices[-1] + 1, total)
        result = link_slices(per_slice, volume.data.shape, volume.spacing)
        return replace(result, detections=raw) if keep_detections else result


def model_stack(volume: Volume) -> np.ndarray:
    """The volume as the model sees it: uint8 [S, H, W], one percentile window per volume.

    The same windowing the training slices got (spine.volume.export_slices), so the model
    sees what it learnt from.
    """
    from spine.volume import window_percentile

    return window_percentile(volume.data, 0.5, 99.5)


# ----------------------------------------------------------------------------- detections
def clean_detections(
    detection: dict[str, Any], min_score: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One detect() result -> (masks bool [H, W, n], scores float32 [n], s1 float32 [n]).

    s1: the score of detections of the S1 class (spine.dataset.S1_CLASS_ID), 0 for plain
    bodies (and for every detection of a model without an S1 class). Drops detections below
    min_score and those whose mask is empty.
    """
    from spine.dataset import S1_CLASS_ID

    masks = np.asarray(detection["masks"], dtype=bool)
    scores = np.asarray(detection["scores"], dtype=np.float32)
    if masks.ndim != 3 or masks.shape[-1] == 0:
        shape = masks.shape[:2] if masks.ndim >= 2 else (0, 0)
        return np.zeros(shape + (0,), bool), np.zeros([0], np.float32), np.zeros([0], np.float32)
    class_ids = np.asarray(detection.get("class_ids", np.ones(len(scores))), dtype=np.int32)
    s1 = np.where(class_ids == S1_CLASS_ID, scores, 0.0).astype(np.float32)
    keep = (scores >= min_score) & masks.any(axis=(0, 1))
    return masks[..., keep], scores[keep], s1[keep]


def masks_to_labels(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """bool [H, W, N] -> int32 [H, W], label k+1 for instance k; where instances overlap
    the higher score wins."""
    labels = np.zeros(masks.shape[:2], dtype=np.int32)
    for k in np.argsort(scores, kind="stable"):  # ascending: the best is painted last
        labels[masks[..., k]] = k + 1
    return labels


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """bool [H, W, N] -> int32 [N, (y1, x1, y2, x2)], y2/x2 exclusive; zeros for empty masks."""
    n = masks.shape[-1]
    boxes = np.zeros([n, 4], dtype=np.int32)
    rows = masks.any(axis=1)  # [H, N]
    cols = masks.any(axis=0)  # [W, N]
    for k in range(n):
        ys, xs = np.flatnonzero(rows[:, k]), np.flatnonzero(cols[:, k])
        if ys.size:
            boxes[k] = (ys[0], xs[0], ys[-1] + 1, xs[-1] + 1)
    return boxes


def body_height_mm(mask: np.ndarray, row_mm: float, col_mm: float) -> float:
    """Mean height of a vertebral body on one slice, in mm: area / anterior-posterior depth.

    The depth is measured along the body's own principal axis nearest the horizontal, so a
    body tilted by lordosis is not over-measured (an upright or tilted rectangle gives its
    true height). mask: bool [H, W].
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0.0
    if ys.size < 3:
        return float(ys.max() - ys.min() + 1) * row_mm
    pts = np.stack([ys * row_mm, xs * col_mm], axis=1)  # [P, (y, x)] in mm
    pts -= pts.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov(pts.T))  # columns: principal axes
    # The axis with the larger x component is the anterior-posterior (depth) axis.
    depth_axis = vecs[:, np.argmax(np.abs(vecs[1]))]
    proj = pts @ depth_axis
    # One pixel's footprint along the axis, so a 1-pixel-wide mask has depth > 0.
    pixel = abs(depth_axis[0]) * row_mm + abs(depth_axis[1]) * col_mm
    depth = float(proj.max() - proj.min()) + pixel
    return float(ys.size * row_mm * col_mm / depth)


def build_slice_result(
    index: int,
    masks: np.ndarray,
    scores: np.ndarray,
    spacing: Sequence[float],
    s1: np.ndarray | None = None,
) -> SliceResult:
    """Order instances top to bottom, name them from the S1 evidence (spine.levels), and
    compute their boxes. s1: S1-class score per instance [n] (None: no S1 class)."""
    from spine.levels import centroids, name_from_evidence, order_top_to_bottom

    order = order_top_to_bottom(masks)
    masks, scores = masks[..., order], scores[order]
    s1 = np.zeros(len(order), np.float32) if s1 is None else np.asarray(s1, np.float32)[order]
    naming = name_from_evidence(centroids(masks)[:, 0] if len(order) else np.zeros(0), s1)
    return SliceResult(
        index=index,
        masks=masks,
        boxes=boxes_from_masks(masks),
        scores=scores.astype(np.float32),
        levels=naming.names,
        spacing=(float(spacing[0]), float(spacing[1])),
        name_confidence=naming.confidence,
        naming_note=naming.note,
        s1_evidence=s1,
    )


# ----------------------------------------------------------------------------- linking
def link_slices(
    per_slice: Sequence[tuple[np.ndarray, ...]],
    shape: Sequence[int],
    spacing: Sequence[float],
    min_iou: float = 0.2,
    max_gap: int = 1,
) -> VolumeResult:
    """Link per-slice instances into bodies by overlap with the neighbouring slices.

    per_slice: S entries of (masks bool [H, W, n_s], scores [n_s]) or (masks, scores,
    s1 [n_s]) with the S1-class scores (clean_detections). An instance joins the body it
    overlaps most (IoU >= min_iou, greedy, best pairs first) among the bodies seen in the
    last max_gap + 1 slices; otherwise it starts a new body. Bodies are then renumbered top
    to bottom by centroid row and named from their S1 evidence (spine.levels), each body's
    evidence being the area-weighted mean of its slices' S1 scores (central slices count most).
    """
    from spine.levels import name_from_evidence

    num_slices, height, width = (int(v) for v in shape)
    tracks = np.zeros([num_slices, height, width], dtype=np.int32)
    memory = np.zeros([height, width], dtype=np.int32)  # last track seen at each pixel
    age = np.zeros([height, width], dtype=np.int32)  # slices since then
    score_of: dict[tuple[int, int], float] = {}  # (slice, track) -> detection score
    s1_of: dict[tuple[int, int], float] = {}  # (slice, track) -> S1-class score
    next_track = 1
    for s, entry in enumerate(per_slice):
        masks, scores = entry[0], entry[1]
        s1 = entry[2] if len(entry) > 2 else np.zeros(len(scores), np.float32)
        if masks.shape[-1] == 0:  # nothing found (whatever shape the empty array has)
            masks = np.zeros((height, width, 0), dtype=bool)
        inst = masks_to_labels(masks, scores)  # [H, W], instance k+1
        assignment = match_instances(inst, memory, masks.shape[-1], min_iou)
        lut = np.zeros(masks.shape[-1] + 1, dtype=np.int32)
        for k in range(masks.shape[-1]):
            if not np.any(inst == k + 1):
                continue  # fully covered by a better instance
            if assignment.get(k + 1):
                lut[k + 1] = assignment[k + 1]
            else:
                lut[k + 1] = next_track
                next_track += 1
            score_of[(s, int(lut[k + 1]))] = float(scores[k])
            s1_of[(s, int(lut[k + 1]))] = float(s1[k])
        tracks[s] = lut[inst]
        seen = tracks[s] > 0
        memory = np.where(seen, tracks[s], memory)
        age = np.where(seen, 0, age + 1)
        memory[age > max_gap] = 0

    # Renumber top to bottom: centroid row of every track over the whole volume.
    n = next_track - 1
    counts = np.bincount(tracks.ravel(), minlength=n + 1)[1:]
    row_index = np.broadcast_to(np.arange(height)[None, :, None], tracks.shape)
    row_sum = np.bincount(tracks.ravel(), weights=row_index.ravel(), minlength=n + 1)[1:]
    alive = np.flatnonzero(counts > 0) + 1  # track ids with voxels
    order = alive[np.argsort(row_sum[alive - 1] / counts[alive - 1], kind="stable")]
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[order] = np.arange(1, len(order) + 1)
    labels = relabel[tracks]

    count = len(order)
    slice_scores: dict[int, np.ndarray] = {}
    sums, hits = np.zeros(count), np.zeros(count)
    s1_sums, areas = np.zeros(count), np.zeros(count)
    # Pixels of each body on each slice [S, N+1] (column 0 background), counted once.
    slice_areas = np.stack([np.bincount(sl.ravel(), minlength=count + 1) for sl in labels])
    for (s, track), score in score_of.items():
        k = relabel[track] - 1
        if k < 0:
            continue
        slice_scores.setdefault(s, np.zeros(count, np.float32))[k] = score
        sums[k] += score
        hits[k] += 1
        area = float(slice_areas[s, k + 1])
        s1_sums[k] += area * s1_of[(s, track)]
        areas[k] += area
    mean_scores = (sums / np.maximum(hits, 1)).astype(np.float32)
    s1_evidence = (s1_sums / np.maximum(areas, 1.0)).astype(np.float32)
    rows = row_sum[order - 1] / counts[order - 1] if count else np.zeros(0)
    naming = name_from_evidence(rows, s1_evidence)
    return VolumeResult(
        labels=labels,
        levels=naming.names,
        scores=mean_scores,
        spacing=tuple(float(v) for v in spacing),
        slice_scores=slice_scores,
        name_confidence=naming.confidence,
        naming_note=naming.note,
        s1_evidence=s1_evidence,
    )


def match_instances(
    inst: np.ndarray, memory: np.ndarray, num_instances: int, min_iou: float
) -> dict[int, int]:
    """Greedy one-to-one IoU matching of instance labels to remembered track labels.

    inst, memory: int [H, W] label images (0 background). Returns {instance: track}.
    """
    tracks = np.unique(memory[memory > 0])
    if num_instances == 0 or tracks.size == 0:
        return {}
    compact = np.searchsorted(tracks, memory) + 1  # track id -> 1..T
    compact[memory == 0] = 0
    t = tracks.size
    # Joint histogram of (instance, track) over all pixels: [N+1, T+1].
    joint = np.bincount(
        (inst.astype(np.int64) * (t + 1) + compact).ravel(), minlength=(num_instances + 1) * (t + 1)
    ).reshape(num_instances + 1, t + 1)
    inter = joint[1:, 1:].astype(np.float64)  # [N, T]
    area_i = joint[1:, :].sum(axis=1)[:, None]
    area_t = joint[:, 1:].sum(axis=0)[None, :]
    iou = inter / np.maximum(area_i + area_t - inter, 1)
    result: dict[int, int] = {}
    used: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), t)
        if iou[i, j] < min_iou:
            break
        if i + 1 in result or j in used:
            continue
        result[i + 1] = int(tracks[j])
        used.add(j)
    return result


# ----------------------------------------------------------------------------- scans in
EXAMPLES_DIR = REPO_ROOT / "examples"
DATA_DIR_ENV = "SPINE_DATA_DIR"
EXAMPLE_PHANTOM_SEED = 7
EXAMPLE_PHANTOM_NAME = "phantom_example"


def resolve_data_path(text: str, root: str | Path | None = None) -> Path:
    """A typed path -> a file inside the server's data folder ($SPINE_DATA_DIR).

    Relative paths are taken inside the folder. A path outside it (also through '..' or a
    symlink), or any path when no folder is configured, raises SpineInputError: the server
    never opens arbitrary files for a web user.
    """
    root = root if root is not None else os.environ.get(DATA_DIR_ENV)
    if not root:
        raise SpineInputError(
            "Opening files by path is switched off on this server (no SPINE_DATA_DIR is "
            "set). Upload the file instead."
        )
    text = text.strip()
    if not text:
        raise SpineInputError("Type the path of a .nii or .nii.gz file.")
    base = Path(root).expanduser().resolve()
    path = (base / Path(text).expanduser()).resolve()
    if not path.is_relative_to(base):
        raise SpineInputError(
            f"{text} is outside the data folder {base}; only files inside it can be opened."
        )
    if not path.is_file():
        raise SpineInputError(f"No such file in the data folder: {path.relative_to(base)}")
    return path


def example_scan() -> Volume:
    """The example scan: the first examples/*.nii.gz (a real scan, with its citation beside
    it) if bundled, otherwise a synthetic phantom with a fixed seed."""
    from spine.volume import load_volume

    for path in sorted(EXAMPLES_DIR.glob("*.nii.gz")):
        if not path.name.endswith("_vertebrae.nii.gz"):
            return load_volume(path)
    from spine.phantom import make_phantom
    from spine.volume import volume_from_nifti

    phantom = make_phantom(seed=EXAMPLE_PHANTOM_SEED)
    return volume_from_nifti(phantom.image, name=EXAMPLE_PHANTOM_NAME)


def example_description(volume: Volume) -> str:
    """One line telling the user what the example scan is (real and cited, or synthetic)."""
    if volume.name == EXAMPLE_PHANTOM_NAME:
        return (
            "Example: a synthetic T2 phantom (spine.phantom, fixed seed); no real example "
            "scan is bundled in examples/ yet."
        )
    return f"Example: {volume.name} from examples/ (its source and citation are beside it)."
