"""Results as pictures and files: the overlay PNG, label-map NIfTI, VIA JSON and CSV.

Used by the app (downloads) and spine-segment (files). Everything here takes a Volume and a
SliceResult/VolumeResult from spine.pipeline and never runs the model.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spine.config import WINDOW_PERCENTILES
from spine.folders import slice_image_name, slice_stem
from spine.volume import percentile_range

if TYPE_CHECKING:
    from spine.pipeline import SliceResult, VolumeResult
    from spine.volume import Volume


# ----------------------------------------------------------------------------- exports
def slice_labels_nifti(volume: Volume, result: SliceResult) -> Any:
    """A label map of the whole input grid with only the segmented slice filled (nib image)."""
    labels = np.zeros(volume.data.shape, dtype=np.int16)
    labels[result.index] = result.label_map()
    return volume.labels_to_nifti(labels)


def volume_labels_nifti(volume: Volume, result: VolumeResult) -> Any:
    """The volume's label map as a NIfTI image with the input's affine and axis order."""
    return volume.labels_to_nifti(result.labels)  # it picks the smallest integer type


def measurements_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Measurement rows (from .measurements()) -> CSV text; the header is there even when
    nothing was found. columns: pipeline.SLICE_COLUMNS or pipeline.VOLUME_COLUMNS."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def via_json(
    volume: Volume, results: Iterable[SliceResult], sizes: dict[int, int] | None = None
) -> str:
    """Predictions as VIA 2 JSON (one image per slice, one polygon per vertebra), so they can
    be corrected in VIA. Regions carry the level ("vertebra") and the detection "score".

    Image names are NAME_sNNN.png (spine.volume.export_slices writes those images); sizes
    maps slice index -> PNG file size in bytes, which VIA uses with the name as the key
    (-1 when the images are not written).
    """
    from spine.via import masks_to_via_entry

    entries = {}
    for result in results:
        filename = slice_image_name(volume.name, result.index)
        size = (sizes or {}).get(result.index, -1)
        regions = []
        for k, level in enumerate(result.levels):
            entry = masks_to_via_entry(filename, result.masks[..., k : k + 1], [level], size)
            for region in entry["regions"]:
                region["region_attributes"]["score"] = round(float(result.scores[k]), 3)
                regions.append(region)
        entries[f"{filename}{size}"] = {
            "filename": filename,
            "size": size,
            "regions": regions,
            "file_attributes": {},
        }
    return json.dumps(entries, separators=(",", ":"))


# ----------------------------------------------------------------------------- display
# Distinct colours (RGB 0-1) for bodies 1, 2, 3, ... from the top; stable across slices.
PALETTE = (
    (0.90, 0.30, 0.24),
    (0.20, 0.63, 0.90),
    (0.98, 0.75, 0.18),
    (0.30, 0.78, 0.40),
    (0.70, 0.40, 0.90),
    (1.00, 0.55, 0.20),
    (0.25, 0.85, 0.80),
    (0.95, 0.45, 0.70),
    (0.65, 0.80, 0.25),
    (0.55, 0.60, 1.00),
)
DISPLAY_SIZE = 640  # the overlay is drawn at least this large (longest side, pixels)


def level_color(position: int) -> tuple[float, float, float]:
    """Colour for a level's place in the spine (result_positions), RGB floats in 0..1."""
    return PALETTE[position % len(PALETTE)]


def percentile_window(
    volume: Volume, low: float = WINDOW_PERCENTILES[0], high: float = WINDOW_PERCENTILES[1]
) -> tuple[float, float]:
    """(window, level) that maps the volume's low..high intensity percentiles to black..white
    (the percentiles of the model input: spine.volume.percentile_range)."""
    lo, hi = (float(v) for v in percentile_range(volume.data, low, high))
    if hi <= lo:
        hi = lo + 1.0
    return hi - lo, (hi + lo) / 2.0


def display_shape(shape: Sequence[int], row_mm: float, col_mm: float) -> tuple[int, int]:
    """(rows, cols) to draw a [H, W] slice with square pixels, longest side >= DISPLAY_SIZE."""
    h_mm, w_mm = shape[0] * row_mm, shape[1] * col_mm
    scale = max(DISPLAY_SIZE, shape[0], shape[1]) / max(h_mm, w_mm)
    return max(1, round(h_mm * scale)), max(1, round(w_mm * scale))


def render_slice(
    volume: Volume,
    index: int,
    window: float,
    level: float,
    result: SliceResult | None = None,
    alpha: float = 0.45,
    outlines: bool = True,
    boxes: bool = False,
    names: bool = True,
    scores: bool = True,
) -> np.ndarray:
    """The windowed slice, resampled to square display pixels, with the result drawn over.

    Returns RGB uint8 [h, w, 3] (h, w from display_shape). Each level keeps its colour
    (level_color of result_positions) on every slice.
    """
    import cv2

    from mrcnn.visualize import draw_overlay
    from spine.volume import window_level

    gray = window_level(volume.slice(index), window, level)  # uint8 [H, W]
    h, w = display_shape(gray.shape, volume.spacing[1], volume.spacing[2])
    image = cv2.resize(gray, (w, h), interpolation=cv2.INTER_LINEAR)
    rgb = np.repeat(image[..., None], 3, axis=-1)
    if result is None or result.count == 0:
        return rgb
    masks = cv2.resize(result.masks.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    masks = masks.reshape(h, w, -1) > 0  # [h, w, N]
    fy, fx = h / gray.shape[0], w / gray.shape[1]
    scaled = np.round(result.boxes * np.array([fy, fx, fy, fx])).astype(np.int32)
    return draw_overlay(
        rgb,
        masks,
        boxes=scaled,
        labels=result.levels if names else None,
        scores=result.scores,
        colors=[level_color(p) for p in result_positions(result)],
        alpha=alpha,
        show_masks=alpha > 0,
        show_outlines=outlines,
        show_boxes=boxes,
        show_scores=scores,
    )


def result_positions(result: SliceResult) -> list[int]:
    """Colour index of each body in result: its level's place in the spine, so L3 has the
    same colour on every slice and in slice and volume results alike."""
    from spine.levels import SPINE_LEVELS

    return [
        SPINE_LEVELS.index(name) if name in SPINE_LEVELS else k
        for k, name in enumerate(result.levels)
    ]


def png_bytes(image: np.ndarray) -> bytes:
    """RGB uint8 [H, W, 3] or grey [H, W] -> PNG file bytes (as spine.volume.save_image)."""
    import cv2

    bgr = image[..., ::-1] if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise ValueError("could not encode the overlay as PNG")
    return buf.tobytes()


def result_files(volume: Volume, result: SliceResult | VolumeResult) -> dict[str, tuple]:
    """The files a user takes away for a slice or volume result, ready for downloads.

    Returns {kind: (data bytes/str, file name, MIME type)} for kind "labels" (label map
    .nii.gz in the input's geometry), "via" (predictions as VIA 2 JSON, slices with bodies),
    "via_zip" (that JSON plus the slice images it names, to open and correct in VIA) and
    "csv" (the measurement table).
    """
    from spine.folders import label_map_name
    from spine.pipeline import SLICE_COLUMNS, VOLUME_COLUMNS, SliceResult, model_stack
    from spine.volume import nifti_bytes

    name = volume.name
    if isinstance(result, SliceResult):
        stem, columns = slice_stem(name, result.index), SLICE_COLUMNS
        label_img, slices = slice_labels_nifti(volume, result), [result]
        indices = [result.index]
    else:
        stem, columns = name, VOLUME_COLUMNS
        label_img = volume_labels_nifti(volume, result)
        indices = np.flatnonzero(result.labels.any(axis=(1, 2))).tolist()
        # One slice's masks at a time (via_json reads them once), not every slice's at once.
        slices = (result.slice_result(i) for i in indices)
    stack = model_stack(volume)  # the slices as the model saw them, uint8 [S, H, W]
    images = {i: png_bytes(stack[i]) for i in indices}
    del stack
    via = via_json(volume, slices, {i: len(data) for i, data in images.items()})
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed
        zf.writestr(f"{stem}_via.json", via)
        for index, data in images.items():
            zf.writestr(slice_image_name(name, index), data)
    return {
        "labels": (nifti_bytes(label_img), label_map_name(stem), "application/gzip"),
        "via": (via, f"{stem}_via.json", "application/json"),
        "via_zip": (archive.getvalue(), f"{stem}_via.zip", "application/zip"),
        "csv": (measurements_csv(result.measurements(), columns), f"{stem}_measurements.csv",
                "text/csv"),  # fmt: skip
    }
