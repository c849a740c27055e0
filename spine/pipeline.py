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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spine import bundled
from spine.errors import InvalidScanError, MissingWeightsError, SpineInputError

if TYPE_CHECKING:
    from mrcnn.config import Config
    from spine.volume import Volume

logger = logging.getLogger(__name__)

# The bundled model (package data, spine.bundled: weights/ and configs/ in a checkout).
DEFAULT_WEIGHTS = bundled.demo_weights()
DEFAULT_CONFIG = bundled.demo_config()
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
# What the measured columns mean, in the words the page (column help) and README use.
MEASURE_HELP = {
    "score": "Detection score, 0-1: how sure the network is that this outline is a vertebral "
    "body (for a volume, its mean over the slices the body is on). It is not a probability "
    "that the level name is right; that is the name confidence.",
    "area_mm2": "Area of the body's mask on this slice.",
    "height_mm": "Mean height of the body: its area / its anterior-posterior depth on the "
    "slice (for a volume, on the slice where the body is largest), the depth measured along "
    "the body's own axis; not the anterior, middle and posterior heights of a radiologist.",
    "volume_mm3": "Voxels of the body times the voxel volume.",
}
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
    s1_evidence: float32 [N], the network's S1 probability per body (clean_detections).
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

    labels: uint16 [S, H, W] (int32 past 65535 tracks), 0 background, k the k-th body from
    the top (same body, same label on every slice). levels: names of labels 1..N. scores:
    float32 [N], mean detection score of each body over its slices. spacing: (slice_mm,
    row_mm, col_mm).
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
        from mrcnn.utils import extract_bboxes
        from spine.volume import label_instances

        masks, ids = label_instances(self.labels[index])  # [H, W, n], bodies top to bottom
        present = ids.astype(np.int32).tolist()
        boxes = extract_bboxes(masks)
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
        # Area of every body on every slice: [S, N]; the largest slice is its mid-body slice.
        # Slice by slice: np.bincount of the whole map would make an int64 copy of it.
        per_slice = np.stack(
            [np.bincount(s.ravel(), minlength=n + 1)[1 : n + 1] for s in self.labels]
        )
        voxels = per_slice.sum(axis=0)  # [N]
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


def name_is_unsure(confidence: float) -> bool:
    """A name shown as unsure: its confidence is below UNSURE_NAME (the page and the CSV
    then carry the naming note; spine-evaluate counts such slices)."""
    return confidence < UNSURE_NAME


def _unsure_note(values: Sequence[float], k: int, note: str) -> str:
    """The naming note for a row whose name is unsure (name_is_unsure), else ""."""
    return note if k < len(values) and name_is_unsure(values[k]) else ""


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
    cfg = cfg.replace(IMAGES_PER_GPU=1)

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
        from spine.model_input import ModelInput

        model_input = ModelInput.of(self.config)
        stack = model_input.stack(volume.data) if stack is None else stack
        images = [model_input.image(stack, i) for i in indices]  # [H, W, 3] each
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
        check_segment_size(volume)
        total = volume.num_slices
        stack = model_stack(volume, self.config)
        # Each batch's masks go straight into the label map (SliceLinker), so memory is one
        # label map plus one batch, whatever the number of slices.
        linker = SliceLinker(volume.data.shape)
        raw: list[tuple[np.ndarray, np.ndarray]] = []
        if progress:
            progress(0, total)
        for start in range(0, total, batch):
            indices = list(range(start, min(start + batch, total)))
            for detection in self.detect_slices(volume, indices, stack):
                linker.add(*clean_detections(detection, min_score))
                if keep_detections:
                    raw.append(clean_detections(detection)[:2])
            if progress:
                progress(indices[-1] + 1, total)
        del stack
        result = linker.result(volume.spacing)
        return replace(result, detections=raw) if keep_detections else result


# ----------------------------------------------------------------------------- queueing
SLOTS_ENV = "SPINESEG_SEGMENTATIONS"  # how many segmentations the page runs at once
DEFAULT_SLOTS = 1


class WorkSlots:
    """At most `size` segmentations at a time (a threading.BoundedSemaphore); the others
    wait their turn, and are told how many are ahead of them (running or waiting)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        self._slots = threading.BoundedSemaphore(self.size)
        self._lock = threading.Lock()
        self.running = 0
        self.waiting = 0

    @contextmanager
    def slot(
        self, on_wait: Callable[[int], None] | None = None, poll: float = 0.5
    ) -> Iterator[None]:
        """Hold one slot for the block. While none is free, on_wait(ahead) is called every
        `poll` seconds with the number of other segmentations ahead (running or waiting),
        so the page can say so (and Streamlit can stop a run whose session went away)."""
        with self._lock:
            self.waiting += 1
        try:
            free = self._slots.acquire(blocking=False)
            while not free:
                if on_wait is not None:
                    with self._lock:  # everyone else who holds or wants a slot
                        others = self.running + self.waiting - 1
                    on_wait(max(others, 1))
                free = self._slots.acquire(timeout=poll)
        finally:
            with self._lock:
                self.waiting -= 1
        with self._lock:
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1
            self._slots.release()


def _slots_from_env() -> int:
    text = os.environ.get(SLOTS_ENV, "")
    try:
        return max(1, int(text)) if text.strip() else DEFAULT_SLOTS
    except ValueError:
        logger.warning("%s=%r is not a number; using %d", SLOTS_ENV, text, DEFAULT_SLOTS)
        return DEFAULT_SLOTS


# The page's queue: one per server process (this module is imported once; app.py is re-run).
PAGE_SLOTS = WorkSlots(_slots_from_env())


def model_stack(volume: Volume, config: Config | None = None) -> np.ndarray:
    """The volume as the model sees it: uint8 [S, H, W], one percentile window per volume
    (spine.model_input.ModelInput, the definition training used too)."""
    from spine.model_input import ModelInput

    return ModelInput.of(config).stack(volume.data)


# ----------------------------------------------------------------------------- detections
def clean_detections(
    detection: dict[str, Any], min_score: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One detect() result -> (masks bool [H, W, n], scores float32 [n], s1 float32 [n]).

    s1: the network's probability that the detection is S1 (spine.dataset.S1_CLASS_ID),
    whichever class it was named; without class_probs (a plain Matterport result) the score
    of detections named S1, 0 for the others; 0 for a model without an S1 class. Drops
    detections below min_score and those whose mask is empty.
    """
    from spine.dataset import S1_CLASS_ID

    masks = np.asarray(detection["masks"], dtype=bool)
    scores = np.asarray(detection["scores"], dtype=np.float32)
    if masks.ndim != 3 or masks.shape[-1] == 0:
        shape = masks.shape[:2] if masks.ndim >= 2 else (0, 0)
        return np.zeros(shape + (0,), bool), np.zeros([0], np.float32), np.zeros([0], np.float32)
    class_ids = np.asarray(detection.get("class_ids", np.ones(len(scores))), dtype=np.int32)
    probs = detection.get("class_probs")  # [n, NUM_CLASSES]
    if probs is not None and np.shape(probs)[-1] > S1_CLASS_ID:
        s1 = np.asarray(probs, dtype=np.float32)[:, S1_CLASS_ID]
    else:
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
    compute their boxes. s1: S1 probability per instance [n] (None: no S1 class)."""
    from mrcnn.utils import extract_bboxes
    from spine.levels import centroids, name_from_evidence, order_top_to_bottom

    order = order_top_to_bottom(masks)
    masks, scores = masks[..., order], scores[order]
    s1 = np.zeros(len(order), np.float32) if s1 is None else np.asarray(s1, np.float32)[order]
    naming = name_from_evidence(centroids(masks)[:, 0] if len(order) else np.zeros(0), s1)
    return SliceResult(
        index=index,
        masks=masks,
        boxes=extract_bboxes(masks),
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
    s1 [n_s]) with the S1 probabilities (clean_detections). An instance joins the body it
    overlaps most (IoU >= min_iou, greedy, best pairs first) among the bodies seen in the
    last max_gap + 1 slices; otherwise it starts a new body. Bodies are then renumbered top
    to bottom by centroid row and named from their S1 evidence (spine.levels), each body's
    evidence being the area-weighted mean of its slices' S1 scores (central slices count most).
    """
    linker = SliceLinker(shape, min_iou, max_gap)
    for entry in per_slice:
        linker.add(*entry)
    return linker.result(spacing)


# The largest scan segment_volume takes (voxels). Its memory beyond the scan itself
# (4 bytes a voxel) is about 3 bytes a voxel (uint8 model input, uint16 label map) plus one
# batch of slices; the percentile window needs a transient copy of the scan (np.percentile).
MAX_SEGMENT_VOXELS = 512**3


def check_segment_size(volume: Volume) -> None:
    """Raise SpineInputError when volume has more voxels than MAX_SEGMENT_VOXELS."""
    s, h, w = volume.data.shape
    if s * h * w > MAX_SEGMENT_VOXELS:
        raise InvalidScanError(
            f"The scan has {s} x {h} x {w} = {s * h * w:,} voxels, more than the "
            f"{MAX_SEGMENT_VOXELS:,} (512^3) a whole-volume segmentation takes. Segment "
            "single slices, or crop or downsample the scan."
        )


class SliceLinker:
    """link_slices one slice at a time: each slice's instances are written into the label
    map as they come and only their per-slice sums are kept, so segmenting a volume holds
    one label map (uint16 while the body count allows), never every slice's masks."""

    def __init__(self, shape: Sequence[int], min_iou: float = 0.2, max_gap: int = 1) -> None:
        num_slices, height, width = (int(v) for v in shape)
        self.shape = (num_slices, height, width)
        self.min_iou, self.max_gap = min_iou, max_gap
        self.tracks = np.zeros(self.shape, dtype=np.uint16)  # [S, H, W] track ids, 0 none
        self.memory = np.zeros([height, width], dtype=np.int32)  # last track at each pixel
        self.age = np.zeros([height, width], dtype=np.int32)  # slices since then
        self.rows = np.repeat(np.arange(height, dtype=np.float64), width)  # [H * W] row index
        self.counts = np.zeros(1, np.int64)  # [tracks + 1] voxels of each track
        self.row_sum = np.zeros(1, np.float64)  # [tracks + 1] sum of their row indices
        # (slice, track) -> detection score, S1 probability, pixels of the track there.
        self.score_of: dict[tuple[int, int], float] = {}
        self.s1_of: dict[tuple[int, int], float] = {}
        self.area_of: dict[tuple[int, int], int] = {}
        self.next_track = 1
        self.slice = 0

    def add(self, masks: np.ndarray, scores: np.ndarray, s1: np.ndarray | None = None) -> None:
        """The next slice's instances: masks bool [H, W, n], scores [n], s1 [n] (or None)."""
        s = self.slice
        if s >= self.shape[0]:
            raise ValueError(f"more slices than the {self.shape[0]} of shape {self.shape}")
        height, width = self.shape[1:]
        s1 = np.zeros(len(scores), np.float32) if s1 is None else s1
        if masks.shape[-1] == 0:  # nothing found (whatever shape the empty array has)
            masks = np.zeros((height, width, 0), dtype=bool)
        inst = masks_to_labels(masks, scores)  # [H, W], instance k+1
        assignment = match_instances(inst, self.memory, masks.shape[-1], self.min_iou)
        lut = np.zeros(masks.shape[-1] + 1, dtype=np.int64)
        new = []
        for k in range(masks.shape[-1]):
            if not np.any(inst == k + 1):
                continue  # fully covered by a better instance
            if assignment.get(k + 1):
                lut[k + 1] = assignment[k + 1]
            else:
                lut[k + 1] = self.next_track
                self.next_track += 1
            new.append((int(lut[k + 1]), float(scores[k]), float(s1[k])))
        if self.next_track > np.iinfo(self.tracks.dtype).max:  # more bodies than uint16 holds
            self.tracks = self.tracks.astype(np.int32)
        plane = lut[inst]  # [H, W] track ids
        self.tracks[s] = plane
        flat = plane.ravel()
        counts = np.bincount(flat, minlength=self.next_track)
        row_sum = np.bincount(flat, weights=self.rows, minlength=self.next_track)
        grow = self.next_track - len(self.counts)
        if grow > 0:
            self.counts = np.concatenate([self.counts, np.zeros(grow, np.int64)])
            self.row_sum = np.concatenate([self.row_sum, np.zeros(grow)])
        self.counts += counts
        self.row_sum += row_sum
        for track, score, s1_score in new:
            self.score_of[(s, track)] = score
            self.s1_of[(s, track)] = s1_score
            self.area_of[(s, track)] = int(counts[track])
        seen = plane > 0
        self.memory = np.where(seen, plane, self.memory).astype(np.int32)
        self.age = np.where(seen, 0, self.age + 1)
        self.memory[self.age > self.max_gap] = 0
        self.slice += 1

    def result(self, spacing: Sequence[float]) -> VolumeResult:
        """The bodies, renumbered top to bottom by centroid row and named (see link_slices).

        The label map is relabelled in place: the linker is spent afterwards.
        """
        from spine.levels import name_with_pieces

        n = self.next_track - 1
        counts, row_sum = self.counts[1 : n + 1], self.row_sum[1 : n + 1]
        alive = np.flatnonzero(counts > 0) + 1  # track ids with voxels
        order = alive[np.argsort(row_sum[alive - 1] / counts[alive - 1], kind="stable")]
        relabel = np.zeros(n + 1, dtype=self.tracks.dtype)
        relabel[order] = np.arange(1, len(order) + 1)
        labels = self.tracks
        for s in range(labels.shape[0]):  # in place, a slice at a time (no second map)
            labels[s] = relabel[labels[s]]

        count = len(order)
        slice_scores: dict[int, np.ndarray] = {}
        sums, hits = np.zeros(count), np.zeros(count)
        s1_sums, areas = np.zeros(count), np.zeros(count)
        for (s, track), score in self.score_of.items():
            k = int(relabel[track]) - 1
            if k < 0:
                continue
            slice_scores.setdefault(s, np.zeros(count, np.float32))[k] = score
            sums[k] += score
            hits[k] += 1
            area = float(self.area_of[(s, track)])
            s1_sums[k] += area * self.s1_of[(s, track)]
            areas[k] += area
        mean_scores = (sums / np.maximum(hits, 1)).astype(np.float32)
        s1_evidence = (s1_sums / np.maximum(areas, 1.0)).astype(np.float32)
        rows = row_sum[order - 1] / counts[order - 1] if count else np.zeros(0)
        piece = small_pieces(hits, areas, self.shape[0])
        naming = name_with_pieces(rows, s1_evidence, piece)
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


# An outline seen on at most PIECE_MAX_SLICES slices of a volume, holding less than
# PIECE_FRACTION of the median outline's voxels, is a piece (of a vertebra's arch, a disc, or
# a body's lateral edge that the slices did not link), not a vertebra: it takes no level of
# its own (spine.levels.name_with_pieces). Bodies span 10-17 slices of 4 mm; such pieces
# 1-2 slices and 2-10 % of a body's voxels (MyoSegmenTUM, weights/README.md).
PIECE_MAX_SLICES = 2
PIECE_FRACTION = 0.25


def small_pieces(slices_seen: np.ndarray, voxels: np.ndarray, num_slices: int) -> np.ndarray:
    """Which bodies of a volume are small pieces (see PIECE_FRACTION): slices_seen [N] and
    voxels [N] of each body -> bool [N]. None in a scan of at most 2 x PIECE_MAX_SLICES slices,
    where every body is seen on few slices."""
    slices_seen, voxels = np.asarray(slices_seen), np.asarray(voxels, dtype=np.float64)
    if num_slices <= 2 * PIECE_MAX_SLICES or voxels.size == 0:
        return np.zeros(voxels.shape, dtype=bool)
    return (slices_seen <= PIECE_MAX_SLICES) & (voxels < PIECE_FRACTION * np.median(voxels))


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
EXAMPLES_DIR = bundled.examples_dir()  # package data (examples/ in a checkout)
DATA_DIR_ENV = "SPINE_DATA_DIR"
EXAMPLE_PHANTOM_SEED = 7
EXAMPLE_PHANTOM_NAME = "phantom_example"


def resolve_data_path(text: str, root: str | Path | None = None, *, folders: bool = False) -> Path:
    """A typed path -> a file (or, with folders=True, a folder: a DICOM series or study)
    inside the server's data folder ($SPINE_DATA_DIR).

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
        raise SpineInputError(
            "Type the path of a .nii or .nii.gz file"
            + (", a DICOM folder or a .zip of one." if folders else ".")
        )
    base = Path(root).expanduser().resolve()
    path = (base / Path(text).expanduser()).resolve()
    if not path.is_relative_to(base):
        raise SpineInputError(
            "That path is outside the data folder of this server; only files inside it can "
            "be opened (type a path relative to it)."  # neither folder nor text echoed
        )
    if not (path.is_file() or (folders and path.is_dir())):
        what = "file or folder" if folders else "file"
        raise SpineInputError(f"No such {what} in the data folder: {path.relative_to(base)}")
    return path


def example_scan() -> Volume:
    """The example scan: the first examples/*.nii.gz (a real scan, with its citation beside
    it) if bundled, otherwise a synthetic phantom with a fixed seed."""
    from spine.folders import NIFTI_GZ_SUFFIX, is_label_map
    from spine.volume import load_volume

    for path in sorted(EXAMPLES_DIR.glob(f"*{NIFTI_GZ_SUFFIX}")):
        if not is_label_map(path):
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
