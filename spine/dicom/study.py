"""The series in some DICOM files: headers grouped by SeriesInstanceUID (and, inside a
series, by image size, echo, stack and orientation, as dcm2niix splits them), each summed
up as SeriesInfo; one of them loaded as a Volume on request."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from spine.dicom import files as dicom_files
from spine.dicom.errors import NotSagittalError, fail
from spine.dicom.headers import (
    Frame,
    as_float,
    frames_of,
    plane_of,
    sequence_hint,
    series_date,
    slice_normal,
)
from spine.dicom.series import SeriesInfo, default_name, not_sagittal_reason, preselect

logger = logging.getLogger(__name__)

TODO_FILES = "Give the DICOM files of a series (a folder, the .dcm files or a .zip of them)"


@dataclass
class Series:
    """One series of a study: its summary, its frames (None: no geometry) and headers."""

    info: SeriesInfo
    frames: list[Frame | None]
    headers: list[Any]  # one dataset per file of the series (pixel data not read)
    sources: list[int]  # the file index of each of headers


class DicomStudy:
    """The image series found in some DICOM files; `load(key)` makes a Volume of one.

    Raises DicomInputError when there is nothing to load: no DICOM files at all, or DICOM
    files without images (structured reports, presentation states, segmentations, DICOMDIR).
    """

    def __init__(self, source: Any) -> None:
        self._files = dicom_files.sources(source)
        if not self._files:
            raise fail("No files were given (the folder or zip is empty)", TODO_FILES)
        groups: dict[tuple, list[tuple[int, Any, Frame | None]]] = {}
        headers: dict[int, Any] = {}
        self.skipped_non_dicom = 0
        no_pixels: list[str] = []
        for index, file in enumerate(self._files):
            ds = dicom_files.read_header(file)
            if ds is None:
                self.skipped_non_dicom += 1
                continue
            if "Rows" not in ds or "Columns" not in ds or _is_segmentation(ds):
                no_pixels.append(str(ds.get("Modality", "")) or "unknown")
                continue
            headers[index] = ds
            uid = str(ds.get("SeriesInstanceUID", ""))
            base = (uid, int(ds.Rows), int(ds.Columns), str(ds.get("EchoNumbers", "")))
            for stack, frame in frames_of(ds, index):
                groups.setdefault(base + stack, []).append((index, ds, frame))
        if not groups:
            if no_pixels:
                kinds = ", ".join(sorted(set(no_pixels)))
                raise fail(
                    f"The DICOM files hold no images ({len(no_pixels)} file(s) without pixel "
                    f"data; modality {kinds}: reports, plans, presentation states, segmentations "
                    "or a DICOMDIR?)",
                    "Export the image series themselves",
                )
            raise fail(f"No DICOM files found ({len(self._files)} file(s) looked at)", TODO_FILES)
        self._series: dict[str, Series] = {}
        for key, members in groups.items():
            for k, stack in enumerate(_split_orientation(members)):
                name = key[0] if k == 0 else f"{key[0]}#{k + 1}"
                while name in self._series:
                    name += "+"
                self._series[name] = _summarise(name, stack, headers)
        self.series = sorted(
            (s.info for s in self._series.values()),
            key=lambda i: (i.number if i.number is not None else 1 << 30, i.key),
        )

    @property
    def preselected(self) -> SeriesInfo | None:
        """The sagittal series most likely to be T2 (None when no series is sagittal)."""
        return preselect(self.series)

    def load(self, key: str | None = None, name: str | None = None) -> Any:
        """The series `key` (SeriesInfo.key, or its series number as text; default: the
        preselected one) as a checked Volume. Refuses axial and coronal series."""
        from spine.dicom.geometry import build_volume

        info = self.choose(key)
        reason = not_sagittal_reason(info)
        if reason is not None:
            raise NotSagittalError(reason)
        series = self._series[info.key]
        return build_volume(series, self._files, name or default_name(info))

    def choose(self, key: str | None) -> SeriesInfo:
        """The series `key` names (key, UID or number); None: the only or preselected one."""
        if key is None:
            if len(self.series) == 1:
                return self.series[0]
            pick = self.preselected
            if pick is None:
                listing = "; ".join(i.label for i in self.series)
                raise fail(
                    f"None of the {len(self.series)} series is sagittal ({listing})",
                    "The model segments sagittal slices; add the sagittal series",
                    NotSagittalError,
                )
            return pick
        for info in self.series:
            if key in (info.key, info.uid, str(info.number)):
                return info
        listing = "; ".join(i.label for i in self.series)
        raise fail(f"No series {key!r} among: {listing}", "Choose one of these series")


SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _is_segmentation(ds: Any) -> bool:
    """A DICOM SEG (this tool's output among them): a label map, not an image to segment.
    Left out of the series, so a study exported with its SEG still preselects the images."""
    return str(ds.get("SOPClassUID", "")) == SEGMENTATION_STORAGE or ds.get("Modality") == "SEG"


def _split_orientation(members: list) -> list[list]:
    """Members of one series/size/echo/stack, split where the orientation changes (the
    three planes of a localiser share a series)."""
    stacks: list[list] = []
    refs: list[np.ndarray | None] = []
    for member in members:
        frame = member[2]
        ori = frame.orientation if frame is not None else None
        for ref, stack in zip(refs, stacks, strict=True):
            if (ori is None and ref is None) or (
                ori is not None and ref is not None and np.max(np.abs(ori - ref)) < 1e-2
            ):
                stack.append(member)
                break
        else:
            refs.append(ori)
            stacks.append([member])
    return stacks


def _summarise(key: str, members: list, headers: dict[int, Any]) -> Series:
    ds = members[0][1]
    frames = [m[2] for m in members]
    first = next((f for f in frames if f is not None), None)
    number = as_float(ds.get("SeriesNumber"))
    thickness = None
    if first is not None:
        thickness = first.gap or first.thickness
        if len(frames) > 1 and all(f is not None for f in frames):
            normal = slice_normal(first.orientation)
            d = np.sort([f.position @ normal for f in frames])
            step = np.median(np.diff(d)) if len(d) > 1 else 0
            thickness = float(step) if step > 0 else thickness
    info = SeriesInfo(
        key=key,
        uid=str(ds.get("SeriesInstanceUID", "")),
        number=int(number) if number is not None else None,
        description=str(ds.get("SeriesDescription") or ds.get("ProtocolName") or "").strip(),
        date=series_date(ds),
        modality=str(ds.get("Modality", "")),
        orientation=plane_of(first.orientation if first is not None else None),
        slices=len(frames),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_mm=first.spacing if first is not None else None,
        slice_mm=thickness,
        sequence=sequence_hint(ds),
        multiframe="PerFrameFunctionalGroupsSequence" in ds,
    )
    sources = sorted({m[0] for m in members})
    return Series(info=info, frames=frames, headers=[headers[i] for i in sources],
                  sources=sources)  # fmt: skip


def list_series(source: Any) -> list[SeriesInfo]:
    """The image series in a folder, zip, file(s) or bytes (headers only)."""
    return DicomStudy(source).series


def load_dicom_series(source: Any, series: str | None = None, name: str | None = None) -> Any:
    """A DICOM series (folder, zip, .dcm path(s) or bytes) -> spine.volume.Volume.

    series: SeriesInfo.key, SeriesInstanceUID or series number; None picks the only series
    or, among several, the preselected one (a geometry warning says which).
    """
    study = DicomStudy(source)
    volume = study.load(series, name)
    if series is None and len(study.series) > 1:
        note = (
            f"{len(study.series)} series found; using {volume.dicom.info.label}. Others: "
            + "; ".join(i.label for i in study.series if i.key != volume.dicom.info.key)
        )
        logger.warning("%s: %s", volume.name, note)
        volume.geometry_warnings = [*volume.geometry_warnings, note]
    return volume
