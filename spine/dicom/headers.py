"""What one DICOM header says: where each frame lies (position, orientation, pixel spacing,
rescale), from classic single-frame attributes or enhanced per-frame functional groups;
the plane of a series; sequence hints (T1, T2, STIR, ...) and the series date."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

PLANES = ("sagittal", "coronal", "axial")  # slice normal closest to LPS x, y, z


@dataclass
class Frame:
    """One 2D image of a series: where it is and how to get its pixels."""

    source: int  # index into the study's files
    frame: int | None  # frame index in a multi-frame file (None: single-frame)
    position: np.ndarray  # ImagePositionPatient (LPS mm) of the first pixel's centre
    orientation: np.ndarray  # ImageOrientationPatient: row then column direction cosines
    spacing: tuple[float, float]  # PixelSpacing: (between rows, between columns) mm
    slope: float = 1.0
    intercept: float = 0.0
    thickness: float | None = None
    gap: float | None = None  # SpacingBetweenSlices


def as_float(value: Any, default: float | None = None) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def as_vector(value: Any, n: int) -> np.ndarray | None:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def first_item(group: Any, name: str) -> Any:
    seq = group.get(name) if group is not None else None
    return seq[0] if seq else None


def frames_of(ds: Any, index: int) -> list[tuple[tuple, Frame | None]]:
    """(stack key, frame) for every frame of a dataset; frame None when geometry is missing."""
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = first_item(ds, "SharedFunctionalGroupsSequence")
        out = []
        for k, per in enumerate(ds.PerFrameFunctionalGroupsSequence):

            def group(name: str, per: Any = per) -> Any:
                return first_item(per, name) or first_item(shared, name)

            pos, ori, meas = (group("PlanePositionSequence"), group("PlaneOrientationSequence"),
                              group("PixelMeasuresSequence"))  # fmt: skip
            value = group("PixelValueTransformationSequence")
            content = group("FrameContentSequence")
            stack = (str(content.get("StackID", "")) if content is not None else "",)
            out.append((stack, make_frame(index, k, pos, ori, meas, value)))
        return out
    frames = int(as_float(ds.get("NumberOfFrames"), 1) or 1)
    if frames > 1:
        return [((), None)]  # multi-frame without per-frame geometry: refused when loaded
    return [((), make_frame(index, None, ds, ds, ds, ds))]


def make_frame(index, k, pos, ori, meas, value) -> Frame | None:
    position = as_vector(pos.get("ImagePositionPatient"), 3) if pos is not None else None
    orientation = as_vector(ori.get("ImageOrientationPatient"), 6) if ori is not None else None
    spacing = as_vector(meas.get("PixelSpacing"), 2) if meas is not None else None
    if position is None or orientation is None or spacing is None or np.any(spacing <= 0):
        return None
    value = value if value is not None else {}
    return Frame(
        source=index, frame=k, position=position, orientation=orientation,
        spacing=(float(spacing[0]), float(spacing[1])),
        slope=as_float(value.get("RescaleSlope"), 1.0) or 1.0,
        intercept=as_float(value.get("RescaleIntercept"), 0.0) or 0.0,
        thickness=as_float(meas.get("SliceThickness")),
        gap=as_float(meas.get("SpacingBetweenSlices")),
    )  # fmt: skip


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / max(np.linalg.norm(normal), 1e-12)


def plane_of(orientation: np.ndarray | None) -> str:
    """'sagittal', 'coronal' or 'axial' from ImageOrientationPatient (the slice normal's
    closest patient axis: LPS x, y, z), 'unknown' without it."""
    if orientation is None:
        return "unknown"
    return PLANES[int(np.argmax(np.abs(slice_normal(orientation))))]


def _echo_time(ds: Any) -> float | None:
    te = as_float(ds.get("EchoTime"))
    if te is None and "SharedFunctionalGroupsSequence" in ds:
        for seq in (ds.SharedFunctionalGroupsSequence, ds.get("PerFrameFunctionalGroupsSequence")):
            echo = first_item(seq[0] if seq else None, "MREchoSequence")
            if echo is not None:
                return as_float(echo.get("EffectiveEchoTime"))
    return te


def _timing(ds: Any, name: str, seq: str) -> float | None:
    out = as_float(ds.get(name))
    if out is None and "SharedFunctionalGroupsSequence" in ds:
        item = first_item(ds.SharedFunctionalGroupsSequence[0], seq)
        out = as_float(item.get(name)) if item is not None else None
    return out


def sequence_hint(ds: Any) -> str:
    """'STIR', 'FLAIR', 'T2', 'T1', 'PD' or '' from SeriesDescription/ProtocolName, then from
    ScanningSequence, InversionTime, EchoTime and RepetitionTime."""
    text = " ".join(str(ds.get(k, "")) for k in ("SeriesDescription", "ProtocolName")).upper()
    for hint, pattern in (("STIR", r"STIR|TIRM"), ("FLAIR", r"FLAIR"), ("T2", r"T2"),
                          ("T1", r"T1"), ("PD", r"(?<![A-Z])PD")):  # fmt: skip
        if re.search(pattern, text):
            return hint
    te = _echo_time(ds)
    tr = _timing(ds, "RepetitionTime", "MRTimingAndRelatedParametersSequence")
    ti = as_float(ds.get("InversionTime"))
    scanning = str(ds.get("ScanningSequence", "")).upper()
    if ti is not None and ti > 0:
        if ti < 300 and ("IR" in scanning or not scanning):
            return "STIR"
        if ti > 1500:
            return "FLAIR"
    if te is None:
        return ""
    if te >= 60 and (tr is None or tr >= 1500):
        return "T2"
    if te <= 30 and tr is not None and tr <= 1000:
        return "T1"
    if te <= 40 and tr is not None and tr >= 1500:
        return "PD"
    return ""


def series_date(ds: Any) -> str:
    raw = str(ds.get("SeriesDate") or ds.get("StudyDate") or "")
    return f"{raw[:4]}-{raw[4:6]}-{raw[6:8]}" if re.fullmatch(r"\d{8}", raw) else ""
