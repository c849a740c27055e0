"""DICOM out: the vertebral bodies of a Volume read from DICOM as a DICOM SEG (highdicom).

One segment per body, labelled by its level, on the frames of the source series (which it
references), so it overlays in PACS viewers, OHIF and 3D Slicer. As the standard requires,
the SEG copies the patient and study modules of its source: it carries the same patient
identity as the images it belongs to (file names and logs never do).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from spine.errors import SpineInputError

SEG_SOFTWARE = "SpineSeg"


def _level_code(level: str) -> Any:
    from pydicom.sr.codedict import codes

    try:
        return getattr(codes.SCT, f"{level}Vertebra")
    except AttributeError:
        return codes.SCT.Vertebra


def segmentation(volume: Any, labels: np.ndarray, levels: list[str], version: str = "") -> Any:
    """A highdicom Segmentation of labels int [S, H, W] (display layout, 1..N = levels[0..N-1])
    on the source frames of `volume` (read by spine.dicom); labels without voxels are left
    out. Raises SpineInputError when the volume did not come from DICOM or has no body."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ref = getattr(volume, "dicom", None)
    if ref is None:
        raise SpineInputError(
            "A DICOM SEG can only be made for a scan read from DICOM; this one was not"
        )
    present = [v for v in range(1, len(levels) + 1) if np.any(labels == v)]
    if not present:
        raise SpineInputError("No vertebral body was found, so there is nothing to put in a SEG")
    # display [S, H, W] -> the NIfTI layout spine.dicom made: [columns, rows, frames sorted]
    grid = volume.to_original(np.asarray(labels).astype(np.uint16))
    masks = np.ascontiguousarray(grid.transpose(2, 1, 0))  # [frames, rows, columns]
    numbers = np.zeros(masks.shape, np.uint16)  # renumbered 1..len(present), no gaps
    for k, value in enumerate(present, start=1):
        numbers[masks == value] = k
    multiframe = any(frame is not None for _, frame in ref.frames)
    if multiframe:
        source = ref.headers[0]
        pixels = np.zeros((int(source.NumberOfFrames), *masks.shape[1:]), np.uint16)
        for k, (_, frame) in enumerate(ref.frames):
            pixels[frame - 1] = numbers[k]
        sources = [_with_shared_geometry(source)]
    else:
        sources = [ref.headers[i] for i, _ in ref.frames]
        pixels = numbers
    algorithm = hd.AlgorithmIdentificationSequence(
        name="SpineSeg Mask R-CNN",
        family=codes.cid7162.ArtificialIntelligence,
        version=version or "unknown",
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=f"{levels[value - 1]} vertebral body",
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=_level_code(levels[value - 1]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k, value in enumerate(present, start=1)
    ]
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=_series_number(ref.info.number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SEG_SOFTWARE,
        manufacturer_model_name="SpineSeg vertebral bodies",
        software_versions=version or "unknown",
        device_serial_number="0",
        series_description=f"SpineSeg vertebral bodies ({ref.info.description or 'series'})"[:64],
    )


def _with_shared_geometry(source: Any) -> Any:
    """A copy of an enhanced source whose shared functional groups hold the pixel measures
    and plane orientation (highdicom reads them only there; Philips puts them per frame).
    Only the copy given to highdicom changes; the SEG references the same SOP instance."""
    import copy

    out = copy.deepcopy(source)
    shared = out.SharedFunctionalGroupsSequence[0]
    first = out.PerFrameFunctionalGroupsSequence[0]
    for name in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
        if name not in shared and name in first:
            shared[name] = copy.deepcopy(first[name])
    return out


def _series_number(source: int | None) -> int:
    return (source or 0) + 1000  # a new series beside its source, by the common convention


def segmentation_bytes(
    volume: Any, labels: np.ndarray, levels: list[str], version: str = ""
) -> bytes:
    """The DICOM SEG as the bytes of a Part 10 file (for downloads and spine-segment)."""
    buffer = io.BytesIO()
    segmentation(volume, labels, levels, version).save_as(buffer)
    return buffer.getvalue()


def result_seg_bytes(volume: Any, result: Any, version: str = "") -> bytes:
    """A VolumeResult's or SliceResult's bodies as DICOM SEG bytes (a slice result gives a
    SEG with that slice's bodies only)."""
    labels = getattr(result, "labels", None)
    if labels is None:  # SliceResult: its label map on its slice of the grid
        labels = np.zeros(volume.data.shape, np.int32)
        labels[result.index] = result.label_map()
    return segmentation_bytes(volume, labels, list(result.levels), version)
