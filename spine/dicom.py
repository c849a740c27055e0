"""DICOM in: a folder, a list of files or a .zip of a study -> its series -> a Volume.

Files are read with pydicom (no hand-written parsing), grouped by SeriesInstanceUID (and,
inside a series, by image size, orientation, echo and stack, as dcm2niix splits them) and
summarised as SeriesInfo without any patient identity. A series becomes a Volume with its
exact geometry: frames sorted along the slice normal, the affine from ImagePositionPatient,
ImageOrientationPatient and PixelSpacing (DICOM LPS -> NIfTI RAS: x and y negated), rescale
slope/intercept applied, and missing, duplicated or unevenly spaced slices reported. The
Volume is then made by spine.volume.volume_from_nifti, so everything downstream is the same
as for a NIfTI scan. Classic single-frame images and enhanced multi-frame MR/CT (per-frame
functional groups) are read.

Decisions: a single sagittal image with geometry is a one-slice volume (with a warning);
CT and other modalities with geometry load with a warning (the model was trained on MR);
axial and coronal series are listed but refused for segmentation. Zips are read in memory,
never extracted; their size, member count and member kinds are capped.
"""

from __future__ import annotations

import io
import logging
import re
import stat
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from spine.errors import InvalidScanError

logger = logging.getLogger(__name__)

MAX_ZIP_BYTES = 2 << 30  # uncompressed bytes of all members of one zip
MAX_ZIP_MEMBERS = 10_000
MAX_FILES = 20_000  # files looked at in one folder tree
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
ENHANCED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR",
    "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT",
}
PLANES = ("sagittal", "coronal", "axial")  # slice normal closest to LPS x, y, z
DECODERS_HINT = (
    "install the pixel-data decoders (pip install pylibjpeg pylibjpeg-libjpeg "
    "pylibjpeg-openjpeg pyjpegls, or python-gdcm), or export the series uncompressed"
)


class DicomInputError(InvalidScanError):
    """DICOM input that cannot be used: no images, unsupported encoding, broken geometry."""


class NotSagittalError(DicomInputError):
    """A DICOM series that is axial or coronal: the model segments sagittal slices only."""


def _fail(what: str, todo: str, kind: type[DicomInputError] = DicomInputError) -> Exception:
    return kind(f"{what}. {todo}")


# ----------------------------------------------------------------------------- sources


@dataclass
class _Source:
    """One candidate file: its bytes in memory (zip, upload) or its path on disk."""

    data: bytes | None = None
    path: Path | None = None

    def open(self) -> Any:
        return io.BytesIO(self.data) if self.data is not None else str(self.path)


def is_zip(raw: bytes) -> bool:
    return raw[:4] in ZIP_MAGIC


def is_dicom(raw: bytes) -> bool:
    """True for DICOM Part 10 bytes (the 'DICM' magic after the 128-byte preamble)."""
    return raw[128:132] == b"DICM"


def looks_like_dicom_path(path: str | Path) -> bool:
    """A folder, a .zip or a .dcm/.ima file, or any file with the DICM magic."""
    path = Path(path)
    if path.is_dir() or path.name.lower().endswith((".zip", *DICOM_SUFFIXES)):
        return True
    try:
        with open(path, "rb") as f:
            return is_dicom(f.read(132))
    except OSError:
        return False


def folder_has_dicom(folder: Path, limit: int = 200) -> bool:
    """True when one of the first `limit` files below folder is DICOM (magic or suffix)."""
    for k, path in enumerate(p for p in sorted(folder.rglob("*")) if p.is_file()):
        if k >= limit:
            return False
        if path.name.lower().endswith(DICOM_SUFFIXES) or looks_like_dicom_path(path):
            return True
    return False


def _zip_sources(raw: bytes | Path) -> list[_Source]:
    """The members of a zip, read in memory (never extracted by name) with caps on their
    number and total uncompressed size; symlink and path-traversal members refuse the zip."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw) if isinstance(raw, bytes) else raw)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _fail(
            f"The zip file cannot be read ({exc})", "Upload the complete zip again"
        ) from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_ZIP_MEMBERS:
            raise _fail(
                f"The zip has {len(members)} files, more than the {MAX_ZIP_MEMBERS} allowed",
                "Zip one series (or one study) at a time",
            )
        total = sum(m.file_size for m in members)
        if total > MAX_ZIP_BYTES:
            raise _fail(
                f"The zip unpacks to {total / 2**30:.1f} GiB, more than the "
                f"{MAX_ZIP_BYTES / 2**30:.0f} GiB allowed",
                "Zip only the series to segment",
            )
        for m in members:
            name = m.filename.replace("\\", "/")
            if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in name.split("/"):
                raise _fail(
                    "The zip has a member whose name points outside the archive (absolute or "
                    "with '..'); it is refused as a whole and nothing was extracted",
                    "Zip the DICOM folder again with an ordinary zip tool",
                )
            if stat.S_ISLNK(m.external_attr >> 16):
                raise _fail(
                    "The zip contains a symbolic link; it is refused as a whole",
                    "Zip the DICOM files themselves (zip without --symlinks)",
                )
        sources, read = [], 0
        for m in members:
            base = m.filename.replace("\\", "/").rsplit("/", 1)[-1]
            if m.filename.startswith("__MACOSX/") or base.startswith("._"):
                continue  # macOS resource forks
            try:
                with archive.open(m) as f:
                    data = f.read(MAX_ZIP_BYTES - read + 1)
            except RuntimeError as exc:  # encrypted
                raise _fail(
                    f"A zip member cannot be read ({exc})", "Zip it without a password"
                ) from None
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                raise _fail(
                    f"The zip is corrupt ({exc})", "Upload the complete zip again"
                ) from None
            read += len(data)
            if read > MAX_ZIP_BYTES:
                raise _fail("The zip unpacks to more than it declares", "Zip it again")
            sources.append(_Source(data=data))
    return sources


def _folder_sources(folder: Path) -> list[_Source]:
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            files.append(_Source(path=path))
            if len(files) > MAX_FILES:
                raise _fail(
                    f"The folder has more than {MAX_FILES} files",
                    "Point at the folder of one series or study",
                )
    return files


def _sources(source: Any) -> list[_Source]:
    """A folder, zip, file (path or bytes) or a list of those -> candidate files."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        return _zip_sources(raw) if is_zip(raw) else [_Source(data=raw)]
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return _folder_sources(path)
        if not path.is_file():
            raise _fail(f"No such file or folder: {path}", "Check the path")
        with open(path, "rb") as f:
            head = f.read(4)
        return _zip_sources(path) if head in ZIP_MAGIC else [_Source(path=path)]
    if isinstance(source, Sequence):
        return [s for item in source for s in _sources(item)]
    raise TypeError(f"unsupported DICOM source {type(source).__name__}")


# ----------------------------------------------------------------------------- headers


@dataclass
class _Frame:
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


@dataclass(frozen=True)
class SeriesInfo:
    """What a user needs to choose a series; no patient identity (name, ID, birth date).

    key: identifies the series in the study (SeriesInstanceUID, plus '#k' when one series
    holds several stacks). orientation: sagittal, coronal, axial or 'unknown'.
    sequence: 'T1', 'T2', 'STIR', 'PD', 'FLAIR' or '' when the header says nothing clear.
    """

    key: str
    uid: str
    number: int | None
    description: str
    date: str
    modality: str
    orientation: str
    slices: int
    rows: int
    columns: int
    pixel_mm: tuple[float, float] | None
    slice_mm: float | None
    sequence: str
    multiframe: bool = False

    @property
    def label(self) -> str:
        """One line for a list: 'Series 4: T2 TSE SAG, sagittal, 15 slices, 0.6 x 0.6 mm'."""
        parts = [f"Series {self.number}" if self.number is not None else "Series"]
        text = f"{parts[0]}: {self.description or '(no description)'}"
        extra = [self.orientation, f"{self.slices} slice{'s' * (self.slices != 1)}"]
        if self.pixel_mm:
            extra.append(f"{self.pixel_mm[0]:.2g} x {self.pixel_mm[1]:.2g} mm")
        if self.sequence:
            extra.append(self.sequence)
        if self.modality and self.modality != "MR":
            extra.append(self.modality)
        if self.date:
            extra.append(self.date)
        return f"{text} ({', '.join(extra)})"


def _float(value: Any, default: float | None = None) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def _vector(value: Any, n: int) -> np.ndarray | None:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def _item(group: Any, name: str) -> Any:
    seq = group.get(name) if group is not None else None
    return seq[0] if seq else None


def _frames_of(ds: Any, index: int) -> list[tuple[tuple, _Frame | None]]:
    """(stack key, frame) for every frame of a dataset; frame None when geometry is missing."""
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = _item(ds, "SharedFunctionalGroupsSequence")
        out = []
        for k, per in enumerate(ds.PerFrameFunctionalGroupsSequence):

            def group(name: str, per: Any = per) -> Any:
                return _item(per, name) or _item(shared, name)

            pos, ori, meas = (group("PlanePositionSequence"), group("PlaneOrientationSequence"),
                              group("PixelMeasuresSequence"))  # fmt: skip
            value = group("PixelValueTransformationSequence")
            content = group("FrameContentSequence")
            stack = (str(content.get("StackID", "")) if content is not None else "",)
            out.append((stack, _make_frame(index, k, pos, ori, meas, value)))
        return out
    frames = int(_float(ds.get("NumberOfFrames"), 1) or 1)
    if frames > 1:
        return [((), None)]  # multi-frame without per-frame geometry: refused when loaded
    return [((), _make_frame(index, None, ds, ds, ds, ds))]


def _make_frame(index, k, pos, ori, meas, value) -> _Frame | None:
    position = _vector(pos.get("ImagePositionPatient"), 3) if pos is not None else None
    orientation = _vector(ori.get("ImageOrientationPatient"), 6) if ori is not None else None
    spacing = _vector(meas.get("PixelSpacing"), 2) if meas is not None else None
    if position is None or orientation is None or spacing is None or np.any(spacing <= 0):
        return None
    value = value if value is not None else {}
    return _Frame(
        source=index, frame=k, position=position, orientation=orientation,
        spacing=(float(spacing[0]), float(spacing[1])),
        slope=_float(value.get("RescaleSlope"), 1.0) or 1.0,
        intercept=_float(value.get("RescaleIntercept"), 0.0) or 0.0,
        thickness=_float(meas.get("SliceThickness")),
        gap=_float(meas.get("SpacingBetweenSlices")),
    )  # fmt: skip


def _normal(orientation: np.ndarray) -> np.ndarray:
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / max(np.linalg.norm(normal), 1e-12)


def plane_of(orientation: np.ndarray | None) -> str:
    """'sagittal', 'coronal' or 'axial' from ImageOrientationPatient (the slice normal's
    closest patient axis: LPS x, y, z), 'unknown' without it."""
    if orientation is None:
        return "unknown"
    return PLANES[int(np.argmax(np.abs(_normal(orientation))))]


def _echo_time(ds: Any) -> float | None:
    te = _float(ds.get("EchoTime"))
    if te is None and "SharedFunctionalGroupsSequence" in ds:
        for seq in (ds.SharedFunctionalGroupsSequence, ds.get("PerFrameFunctionalGroupsSequence")):
            echo = _item(seq[0] if seq else None, "MREchoSequence")
            if echo is not None:
                return _float(echo.get("EffectiveEchoTime"))
    return te


def _timing(ds: Any, name: str, seq: str) -> float | None:
    out = _float(ds.get(name))
    if out is None and "SharedFunctionalGroupsSequence" in ds:
        item = _item(ds.SharedFunctionalGroupsSequence[0], seq)
        out = _float(item.get(name)) if item is not None else None
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
    ti = _float(ds.get("InversionTime"))
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


def _date(ds: Any) -> str:
    raw = str(ds.get("SeriesDate") or ds.get("StudyDate") or "")
    return f"{raw[:4]}-{raw[4:6]}-{raw[6:8]}" if re.fullmatch(r"\d{8}", raw) else ""


# ----------------------------------------------------------------------------- study


@dataclass
class _Series:
    info: SeriesInfo
    frames: list[_Frame | None]
    headers: list[Any]  # one dataset per file of the series (pixel data not read)
    sources: list[int]  # the file index of each of headers
    notes: list[str] = field(default_factory=list)


class DicomStudy:
    """The image series found in some DICOM files; `load(key)` makes a Volume of one.

    Raises DicomInputError when there is nothing to load: no DICOM files at all, or DICOM
    files without images (structured reports, presentation states, DICOMDIR).
    """

    def __init__(self, source: Any) -> None:
        import pydicom

        self._files = _sources(source)
        if not self._files:
            raise _fail("No files were given (the folder or zip is empty)", _TODO_FILES)
        groups: dict[tuple, list[tuple[int, Any, _Frame | None]]] = {}
        headers: dict[int, Any] = {}
        self.skipped_non_dicom = 0
        no_pixels: list[str] = []
        for index, file in enumerate(self._files):
            ds = _read_header(pydicom, file)
            if ds is None:
                self.skipped_non_dicom += 1
                continue
            if "Rows" not in ds or "Columns" not in ds:
                no_pixels.append(str(ds.get("Modality", "")) or "unknown")
                continue
            headers[index] = ds
            uid = str(ds.get("SeriesInstanceUID", ""))
            base = (uid, int(ds.Rows), int(ds.Columns), str(ds.get("EchoNumbers", "")))
            for stack, frame in _frames_of(ds, index):
                groups.setdefault(base + stack, []).append((index, ds, frame))
        if not groups:
            if no_pixels:
                kinds = ", ".join(sorted(set(no_pixels)))
                raise _fail(
                    f"The DICOM files hold no images ({len(no_pixels)} file(s) without pixel "
                    f"data; modality {kinds}: reports, plans, presentation states or a DICOMDIR?)",
                    "Export the image series themselves",
                )
            raise _fail(f"No DICOM files found ({len(self._files)} file(s) looked at)", _TODO_FILES)
        self._series: dict[str, _Series] = {}
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
        info = self.choose(key)
        if info.orientation in ("axial", "coronal"):
            article = "an" if info.orientation == "axial" else "a"
            raise _fail(
                f"{info.label} is {article} {info.orientation} series, not sagittal",
                "The model segments sagittal slices only; choose the sagittal series of the study",
                NotSagittalError,
            )
        series = self._series[info.key]
        return _build_volume(series, self._files, name or default_name(info))

    def choose(self, key: str | None) -> SeriesInfo:
        if key is None:
            if len(self.series) == 1:
                return self.series[0]
            pick = self.preselected
            if pick is None:
                listing = "; ".join(i.label for i in self.series)
                raise _fail(
                    f"None of the {len(self.series)} series is sagittal ({listing})",
                    "The model segments sagittal slices; add the sagittal series",
                    NotSagittalError,
                )
            return pick
        for info in self.series:
            if key in (info.key, info.uid, str(info.number)):
                return info
        listing = "; ".join(i.label for i in self.series)
        raise _fail(f"No series {key!r} among: {listing}", "Choose one of these series")


_TODO_FILES = "Give the DICOM files of a series (a folder, the .dcm files or a .zip of them)"


def _read_header(pydicom: Any, file: _Source) -> Any:
    """The dataset without pixel data, or None when the file is not DICOM."""
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(file.open(), stop_before_pixels=True)
    except InvalidDicomError:
        pass
    except Exception:  # truncated or broken: not usable DICOM
        logger.debug("unreadable DICOM header", exc_info=True)
        return None
    try:  # no preamble (older files): accept only when it parses as an image or SOP
        ds = pydicom.dcmread(file.open(), stop_before_pixels=True, force=True)
    except Exception:
        return None
    return ds if "SOPClassUID" in ds and ("Rows" in ds or "Modality" in ds) else None


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


def _summarise(key: str, members: list, headers: dict[int, Any]) -> _Series:
    ds = members[0][1]
    frames = [m[2] for m in members]
    first = next((f for f in frames if f is not None), None)
    number = _float(ds.get("SeriesNumber"))
    thickness = None
    if first is not None:
        thickness = first.gap or first.thickness
        if len(frames) > 1 and all(f is not None for f in frames):
            normal = _normal(first.orientation)
            d = np.sort([f.position @ normal for f in frames])
            step = np.median(np.diff(d)) if len(d) > 1 else 0
            thickness = float(step) if step > 0 else thickness
    info = SeriesInfo(
        key=key,
        uid=str(ds.get("SeriesInstanceUID", "")),
        number=int(number) if number is not None else None,
        description=str(ds.get("SeriesDescription") or ds.get("ProtocolName") or "").strip(),
        date=_date(ds),
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
    return _Series(info=info, frames=frames, headers=[headers[i] for i in sources],
                   sources=sources)  # fmt: skip


_SEQUENCE_SCORE = {"T2": 4.0, "STIR": 3.0, "": 2.0, "PD": 1.5, "FLAIR": 1.0, "T1": 1.0}
_LOCALISER = re.compile(r"LOC|SCOUT|SURVEY|PILOT|TRI.?PLANE", re.IGNORECASE)


def preselect(series: Sequence[SeriesInfo]) -> SeriesInfo | None:
    """The sagittal series most likely to be T2: by sequence hint (T2, then STIR, unknown,
    PD, T1/FLAIR), localisers and series of fewer than 3 slices last, then more slices."""
    sagittal = [s for s in series if s.orientation == "sagittal"]
    if not sagittal:
        return None

    def score(s: SeriesInfo) -> tuple:
        localiser = s.slices < 3 or bool(_LOCALISER.search(s.description))
        return (not localiser, _SEQUENCE_SCORE.get(s.sequence, 2.0), s.slices)

    return max(sagittal, key=score)


def default_name(info: SeriesInfo) -> str:
    """A file-name-safe name from the series number and description (never the patient's
    name, which DICOM file and folder names often carry): 'series4_t2_tse_sag'."""
    text = re.sub(r"[^a-z0-9]+", "_", info.description.lower()).strip("_")[:40]
    number = f"series{info.number}" if info.number is not None else "series"
    return f"{number}_{text}" if text else number


# ----------------------------------------------------------------------------- volume


@dataclass
class DicomReference:
    """What a DICOM SEG needs about the series a Volume came from.

    headers: the source datasets (no pixel data) in slice order, one per frame for
    single-frame series, or the one multi-frame dataset; frames: (dataset index, frame
    number 1-based or None) of each slice of the NIfTI layout's third axis.
    """

    info: SeriesInfo
    headers: list[Any]
    frames: list[tuple[int, int | None]]


def _spacing_problem(d: np.ndarray) -> tuple[str | None, list[str]]:
    """Positions along the normal, sorted -> (error or None, warnings)."""
    steps = np.diff(d)
    step = float(np.median(steps))
    if step <= 1e-3:
        return "the images all lie at the same position", []
    dev = np.abs(steps - step)
    if float(dev.max()) <= 1e-3 * max(step, 1.0):
        return None, []
    ratio = steps / step
    gaps = np.round(ratio)
    if np.all(np.abs(ratio - gaps) < 0.1) and np.all(gaps >= 1):
        missing = int((gaps - 1).sum())
        where = [int(i) + 1 for i in np.nonzero(gaps > 1)[0]]
        return (
            f"{missing} slice(s) are missing (after image(s) {where} of {len(d)} in slice "
            f"order, where the spacing is {', '.join(f'{s:.3g}' for s in steps[gaps > 1])} "
            f"mm instead of {step:.3g} mm)"
        ), []
    if float(dev.max()) <= 0.02 * step:
        return None, [
            f"The slice spacing varies by up to {dev.max():.3g} mm around {step:.3g} mm; "
            "the mean spacing is used"
        ]
    return (f"the slices are unevenly spaced ({steps.min():.3g} to {steps.max():.3g} mm apart)"), []


def _build_volume(series: _Series, files: list[_Source], name: str) -> Any:
    import pydicom

    from spine.volume import volume_from_nifti

    info = series.info
    label = info.label
    if any(f is None for f in series.frames):
        kind = "multi-frame images without per-frame geometry" if any(
            int(_float(h.get("NumberOfFrames"), 1) or 1) > 1 for h in series.headers
        ) else "images without position, orientation or pixel spacing"  # fmt: skip
        raise _fail(
            f"{label}: {kind} (ImagePositionPatient/ImageOrientationPatient/PixelSpacing), "
            "so the scan has no geometry (a secondary capture or screenshot?)",
            "Export the original MR series from the scanner or PACS",
        )
    for header in series.headers:
        if "MOSAIC" in [str(v).upper() for v in header.get("ImageType", [])]:
            raise _fail(
                f"{label}: Siemens mosaic images (diffusion or functional MRI)",
                "Use a structural sagittal series (T2 or T1), not DTI/fMRI",
            )
        if int(header.get("SamplesPerPixel", 1)) != 1:
            raise _fail(f"{label}: colour images, not MR", "Use the grey-scale MR series")
    frames: list[_Frame] = list(series.frames)  # type: ignore[arg-type]
    notes: list[str] = []
    ori = frames[0].orientation
    if any(np.max(np.abs(np.subtract(f.spacing, frames[0].spacing))) > 1e-4 for f in frames):
        raise _fail(f"{label}: the pixel spacing changes between images", "Re-export it")
    normal = _normal(ori)
    frames.sort(key=lambda f: float(f.position @ normal))
    d = np.array([f.position @ normal for f in frames])
    pixels = _read_pixels(pydicom, series, files, frames, label)
    # duplicates: images at one position are dropped when identical, refused otherwise
    keep = [0]
    for i in range(1, len(frames)):
        if abs(d[i] - d[keep[-1]]) < 1e-2:
            if not np.array_equal(pixels[i], pixels[keep[-1]]):
                raise _fail(
                    f"{label}: several different images lie at the same slice position "
                    "(several echoes, time points or repeated acquisitions in one series)",
                    "Export one of them as its own series",
                )
            continue
        keep.append(i)
    if len(keep) < len(frames):
        notes.append(f"{len(frames) - len(keep)} duplicate image(s) of the series were ignored")
        frames, d, pixels = [frames[i] for i in keep], d[keep], pixels[keep]
    if len(frames) > 1:
        problem, warn = _spacing_problem(d)
        if problem:
            raise _fail(
                f"{label}: {problem}",
                "Export the complete series (all its files) again; an incomplete upload or "
                "a series of separate stacks cannot be made into one volume",
            )
        notes += warn
        step = (frames[-1].position - frames[0].position) / (len(frames) - 1)
        line = frames[0].position + np.arange(len(frames))[:, None] * step
        offset = np.max(np.linalg.norm(np.array([f.position for f in frames]) - line, axis=1))
        if offset > 0.1 * max(np.linalg.norm(step), 1.0):
            raise _fail(f"{label}: the slice positions do not lie on a line", "Re-export it")
    else:
        thick = frames[0].gap or frames[0].thickness or 1.0
        step = normal * thick
        notes.append(
            "This is a single image, loaded as a one-slice volume: volumes and heights need "
            "the whole series"
        )
    if info.modality not in ("MR", ""):
        notes.append(
            f"The series is {info.modality}, not MR: the model was trained on MR, so its "
            "results on this scan are not to be trusted"
        )
    if any(h.get("PhotometricInterpretation") == "MONOCHROME1" for h in series.headers):
        pixels = pixels.max() + pixels.min() - pixels
    row_mm, col_mm = frames[0].spacing
    lps = np.eye(4)
    lps[:3, 0] = ori[:3] * col_mm  # voxel axis 0: along a row (column index)
    lps[:3, 1] = ori[3:] * row_mm  # voxel axis 1: down a column (row index)
    lps[:3, 2] = step
    lps[:3, 3] = frames[0].position
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    data = np.ascontiguousarray(pixels.transpose(2, 1, 0))  # [frames, rows, cols] -> [i, j, k]
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # our notes are reported below, once
        volume = volume_from_nifti(img, name=name)
    for note in notes:
        logger.warning("%s: %s", name, note)
        warnings.warn(f"{name}: {note}", stacklevel=3)
    volume.geometry_warnings = [*volume.geometry_warnings, *notes]
    refs = [(series.sources.index(f.source), None if f.frame is None else f.frame + 1)
            for f in frames]  # fmt: skip
    volume.dicom = DicomReference(info=info, headers=series.headers, frames=refs)
    return volume


def _read_pixels(pydicom, series: _Series, files, frames: list[_Frame], label: str) -> np.ndarray:
    """The frames' rescaled pixels, float32 [frames, rows, cols]."""
    cache: dict[int, np.ndarray] = {}
    out = np.zeros((len(frames), series.info.rows, series.info.columns), np.float32)
    for k, frame in enumerate(frames):
        if frame.source not in cache:
            cache[frame.source] = _decode(pydicom, files[frame.source], label)
        array = cache[frame.source]
        array = array[frame.frame] if frame.frame is not None and array.ndim == 3 else array
        if array.shape != out.shape[1:]:
            raise _fail(f"{label}: an image has shape {array.shape}", "Re-export the series")
        out[k] = array.astype(np.float32) * frame.slope + frame.intercept
    return out


def _decode(pydicom: Any, file: _Source, label: str) -> np.ndarray:
    try:
        ds = pydicom.dcmread(file.open(), force=True)
    except Exception as exc:
        raise _fail(f"{label}: a file cannot be read ({exc})", "Export the series again") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise _fail(
            f"{label}: an image file has no pixel data (truncated?)", "Export the series again"
        )
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        if syntax is not None and syntax.is_compressed:
            raise _fail(
                f"{label}: the images are compressed as {syntax.name} ({syntax}), which "
                f"cannot be decoded here ({type(exc).__name__})",
                DECODERS_HINT[0].upper() + DECODERS_HINT[1:],
            ) from None
        raise _fail(
            f"{label}: the pixel data cannot be decoded ({type(exc).__name__}: {exc})",
            "Export the series again",
        ) from None


# ----------------------------------------------------------------------------- entry points


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
