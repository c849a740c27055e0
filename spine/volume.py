"""NIfTI in and out: the one place where pixels are mapped to voxels and back.

A scan is read from a path or from uploaded bytes, checked, and reoriented to one canonical
"display" layout: data [S, H, W] = sagittal slices, rows superior -> inferior, columns
anterior -> posterior (voxel axis codes "RIP"). Everything downstream works on that layout;
label maps go back to the file's own voxel layout and affine with `Volume.labels_to_nifti`.

Non-finite voxels: a scan made only of NaN/inf is rejected; a scan with some NaN/inf voxels
(masked outputs of some pipelines) is accepted, with a warning, and those voxels are set to
the smallest finite value so they display as background.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from mrcnn.atomic import atomic_write
from spine.config import WINDOW_PERCENTILES
from spine.errors import InvalidScanError
from spine.folders import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    is_nifti,
    nifti_stem,
    slice_image_name,
)

logger = logging.getLogger(__name__)

# Canonical voxel axis codes: axis0 -> Right (slices), axis1 -> Inferior (rows),
# axis2 -> Posterior (columns). Display: patient faces left, head at the top.
CANONICAL_AXCODES = ("R", "I", "P")
MAX_VOXELS = 512**3  # a larger scan is almost certainly not a spine series
MAX_IMAGE_PIXELS = 4096 * 4096  # a PNG slice larger than this is not an MR slice
MAX_DECOMPRESSED_BYTES = 1 << 30  # 1 GiB of raw NIfTI (512^3 float64 plus header)


def _fail(what: str, todo: str) -> InvalidScanError:
    return InvalidScanError(f"{what}. {todo}")


# ----------------------------------------------------------------------------- reading


@contextmanager
def _open_source(source: str | Path | bytes | bytearray) -> Iterator[tuple[Any, str, int | None]]:
    """Path or bytes -> (stream of the uncompressed NIfTI bytes, default name, their size).

    Nothing is read here: a .nii.gz (gzip magic, whatever the name) is decompressed as it
    is read, so only the bytes the header asks for are ever inflated (a gzip bomb costs
    nothing); the size is None for gzip (unknown until read) and the file or buffer size
    for plain data, which is refused above MAX_DECOMPRESSED_BYTES before it is read.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw, default_name = io.BytesIO(source), "upload"  # shares the bytes (no copy)
        size = len(source)
    else:
        path = Path(source)
        name = path.name
        if not is_nifti(name):
            raise _fail(
                f"'{name}' is not a NIfTI file name (expected .nii or .nii.gz)",
                "Pass a .nii/.nii.gz file, or DICOM (a folder of the series, a .zip or .dcm)",
            )
        if not path.is_file():
            raise _fail(f"No such file: {name}", "Check the path")
        default_name = nifti_stem(name)
        raw, size = open(path, "rb"), path.stat().st_size  # noqa: SIM115 (closed below)
    with raw:
        if size == 0:
            raise _fail("The file is empty", "Upload a .nii or .nii.gz scan")
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        if compressed:
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz, default_name, None
            return
        if size > MAX_DECOMPRESSED_BYTES:  # checked on the size, before reading
            raise _fail(
                f"The file is larger than {MAX_DECOMPRESSED_BYTES / 2**20:.0f} MiB "
                f"({size / 2**20:.0f} MiB)",
                "Crop or downsample the scan",
            )
        yield raw, default_name, size


# Header and extensions (everything before the voxels) larger than this are not a scan's.
MAX_HEADER_BYTES = 16 << 20


def _header_rest(klass: type, head: bytes, stream: Any) -> bytes:
    """The bytes after `head` up to the header's vox_offset (the extensions), read from
    stream; refused beyond MAX_HEADER_BYTES (nibabel would read what an extension claims)."""
    size = klass.header_class.template_dtype.itemsize
    try:
        offset = float(klass.header_class(head[:size], check=False)["vox_offset"])
    except Exception as exc:  # nibabel raises many types on bad headers
        raise _fail(f"The NIfTI header is invalid ({exc})", "Re-export the scan") from None
    if not np.isfinite(offset) or offset > MAX_HEADER_BYTES:
        raise _fail(
            f"The NIfTI header puts the voxels at byte {offset:g}, past the "
            f"{MAX_HEADER_BYTES >> 20} MiB a header and its extensions may take",
            "Re-export the scan (the header is corrupt)",
        )
    return stream.read(max(0, int(offset) - len(head)))


def _read_voxels(klass: type, stream: Any) -> nib.Nifti1Image:
    """An in-memory image from a stream of NIfTI bytes: the voxels are read once, straight
    into their array (from a GzipFile as they are inflated: no copy of the file is kept)."""
    stream.seek(0)
    holder = nib.FileHolder(fileobj=stream)
    proxy = klass.from_file_map({"header": holder, "image": holder}, mmap=False)
    try:
        data = np.asanyarray(proxy.dataobj)  # applies scl_slope/scl_inter as nibabel does
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_error(exc) from None
    except OSError as exc:  # a short read: fewer voxels than the header's dimensions
        raise _fail(
            f"The NIfTI file is truncated ({exc})".replace("\n", " "),
            "Upload the complete file again",
        ) from None
    # As nibabel's from_file_map does: no affine at construction, so the header passes
    # through unmodified (a NaN affine would otherwise be "fixed" into it), then the header's.
    img = klass(data, None, proxy.header)
    img._affine = proxy.affine
    return img


def _gzip_error(exc: Exception) -> InvalidScanError:
    return _fail(
        f"The gzip data is truncated or corrupt ({exc})",
        "Upload the complete .nii.gz file again (the transfer may have been cut off)",
    )


def _parse_nifti(stream: Any, available: int | None = None) -> nib.Nifti1Image:
    """A stream of uncompressed single-file NIfTI-1/2 bytes -> in-memory image. The header
    is checked before any voxel is read; available: the stream's size, when known."""
    raw = stream.read(540)  # the header (NIfTI-1: 348 bytes, NIfTI-2: 540)
    if len(raw) < 348:
        raise _fail(
            f"The data is too short to be NIfTI ({len(raw)} bytes)",
            "Upload a .nii or .nii.gz scan",
        )
    size_le, size_be = struct.unpack("<i", raw[:4])[0], struct.unpack(">i", raw[:4])[0]
    if 348 in (size_le, size_be):
        magic = raw[344:348]
        if magic == b"ni1\x00":
            raise _fail(
                "This is the header of a two-file NIfTI pair (.hdr/.img)",
                "Convert it to a single .nii/.nii.gz file (e.g. nibabel or fslchfiletype)",
            )
        if magic != b"n+1\x00":
            raise _fail(
                "This looks like an ANALYZE 7.5 header, not NIfTI", "Convert the scan to NIfTI"
            )
        klass = nib.Nifti1Image
    elif 540 in (size_le, size_be) and raw[4:8] == b"n+2\x00":
        klass = nib.Nifti2Image
    else:
        raise _fail(
            "The file is not NIfTI (no NIfTI header found)",
            "Upload a .nii or .nii.gz scan, or DICOM (the .dcm files of a series or a .zip)",
        )
    raw += _header_rest(klass, raw, stream)  # the extensions, up to the voxels
    try:
        header = klass.header_class.from_fileobj(io.BytesIO(raw))
        shape = tuple(int(s) for s in header.get_data_shape())
    except Exception as exc:  # nibabel raises many types on bad headers
        raise _fail(f"The NIfTI header is invalid ({exc})", "Re-export the scan") from None
    if any(s < 0 for s in shape):
        raise _fail(f"The NIfTI header has a negative dimension {shape}", "Re-export the scan")
    # Exact Python-int products: NIfTI-2 dimensions are int64, and np.prod wraps around
    # (2^40 cubed is 0 mod 2^64), which let absurd headers past these checks to fail deep
    # inside nibabel with an OverflowError.
    nvox = math.prod(shape) if shape else 0
    if len(shape) >= 3 and math.prod(shape[:3]) > MAX_VOXELS:
        raise _fail(
            f"The scan is too large ({'x'.join(map(str, shape[:3]))} voxels, limit 512^3)",
            "Crop or downsample it",
        )
    needed = int(header.get_data_offset()) + nvox * header.get_data_dtype().itemsize
    if needed > MAX_DECOMPRESSED_BYTES:  # e.g. a huge 4th dimension: no file this big is read
        raise _fail(
            f"The NIfTI header's dimensions {'x'.join(map(str, shape))} describe "
            f"{needed / 2**20:.0f} MiB of voxels, more than the "
            f"{MAX_DECOMPRESSED_BYTES / 2**20:.0f} MiB limit (a corrupt header or a scan "
            "far too large)",
            "Re-export the scan, or crop or downsample it",
        )
    if available is not None and available < needed:  # known before reading the voxels
        raise _fail(
            f"The NIfTI file is truncated ({available} of {needed} bytes)",
            "Upload the complete file again",
        )
    try:
        return _keep_raw_pixdim(_read_voxels(klass, stream), raw)
    except InvalidScanError:
        raise
    except Exception as exc:
        raise _fail(f"The NIfTI file cannot be read ({exc})", "Re-export the scan") from None


def _read_nifti(source: str | Path | bytes) -> tuple[nib.Nifti1Image, str]:
    with _open_source(source) as (stream, default_name, available):
        try:
            return _parse_nifti(stream, available), default_name
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # reading the header
            raise _gzip_error(exc) from None


def _as_3d(img: nib.Nifti1Image, what: str = "scan", notes: list[str] | None = None) -> np.ndarray:
    """Image -> float32 3D array in the file's voxel layout (first volume of 4D data, said in
    notes when given: a user should be told)."""
    dtype = img.get_data_dtype()
    if dtype.kind == "c" or dtype.names is not None:
        raise _fail(f"The {what} has {dtype} voxels (complex or RGB)", "Export a magnitude image")
    shape = list(img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if len(shape) < 3:
        raise _fail(
            f"The {what} is {len(shape)}D ({'x'.join(map(str, img.shape))}); a 3D volume is needed",
            "Export the whole sagittal series as one 3D NIfTI, not a single image",
        )
    if min(shape[:3]) < 1:
        raise _fail(f"The {what} has an empty dimension {img.shape}", "Re-export the scan")
    data = np.asanyarray(img.dataobj).reshape(img.shape)
    if len(shape) > 3:
        msg = f"The {what} is {len(shape)}D {tuple(img.shape)}; using its first 3D volume"
        logger.warning(msg)
        warnings.warn(msg, stacklevel=3)
        if notes is not None:
            notes.append(msg)
        data = data.reshape(*data.shape[:3], -1)[..., 0]
    return np.asarray(data.reshape(shape[:3]), dtype=np.float32)


def _spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes (mm) along the voxel axes: the norms of the affine's columns.

    Raises InvalidScanError for non-finite entries or a zero-length column (no millimetres).
    """
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    with np.errstate(invalid="ignore", over="ignore"):
        zooms = np.sqrt((columns**2).sum(axis=0))
    if not np.all(np.isfinite(columns)) or not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise _fail(
            f"The scan's affine has invalid voxel sizes {zooms.tolist()} (zero or not finite)",
            "Fix the header's pixdim/sform or re-export the scan (e.g. with dcm2niix)",
        )
    return zooms


def _orientation_transform(affine: np.ndarray) -> np.ndarray:
    """The nibabel ornt transform from the file's voxel layout to the canonical one.

    Canonical axis 0 (the sagittal slices) is the voxel axis closest to world left-right;
    whether the scan really was acquired sagittally is `check_sagittal`'s business.
    """
    start = nio.io_orientation(affine)
    if np.any(np.isnan(start)):
        raise _fail("The scan's affine is degenerate (no orientation)", "Fix its sform/qform")
    return nio.ornt_transform(start, nio.axcodes2ornt(CANONICAL_AXCODES))


# nibabel "fixes" pixdim on reading (zero -> 1 mm, negative -> absolute value) and logs it;
# the values as stored are kept in img.extra under this key so volume_from_nifti can judge.
_RAW_PIXDIM = "spine_raw_pixdim"
NO_ORIENTATION_WARNING = (
    "The scan has no orientation in its header (qform and sform codes are 0): left-right, "
    "up-down and front-back are guessed from the voxel order, so the slices may be flipped "
    "or not sagittal and positions are not scanner coordinates. Re-export the scan with "
    "dcm2niix to keep its orientation"
)


def _keep_raw_pixdim(img: nib.Nifti1Image, raw: bytes) -> nib.Nifti1Image:
    """Record the voxel sizes (pixdim[1:4]) as stored in `raw`, before nibabel's fixes."""
    size = type(img.header).template_dtype.itemsize
    header = type(img.header)(raw[:size], check=False)  # the binary header, as stored
    img.extra[_RAW_PIXDIM] = np.array(header["pixdim"][1:4], dtype=np.float64)
    return img


def _mm(values) -> str:
    return " x ".join(f"{float(v):g}" for v in values)


def _header_geometry(img: nib.Nifti1Image) -> tuple[np.ndarray, nib.Nifti1Header, bool, list]:
    """Image -> (affine, header copy, orientation_known, geometry warnings).

    Without an sform the affine is made from pixdim (the qform's voxel sizes or, with no
    codes at all, voxel sizes only): zero or non-finite pixdim is rejected (nibabel would
    make it 1 mm), negative pixdim is used as its absolute value with a warning.
    """
    header = img.header.copy()
    if not isinstance(header, nib.Nifti1Header):  # not NIfTI: nothing more to check
        return np.asarray(img.affine, dtype=np.float64), header, True, []
    notes: list[str] = []
    if int(header["sform_code"]) == 0:
        stored = img.extra.get(_RAW_PIXDIM) if isinstance(img.extra, dict) else None
        pixdim = np.asarray(header["pixdim"][1:4] if stored is None else stored, np.float64)
        if not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0):
            raise _fail(
                f"The header gives voxel sizes of {_mm(pixdim)} mm (pixdim) and no sform, "
                "so the scan has no usable millimetres (zero or not finite)",
                "Fix pixdim in the header or re-export the scan (e.g. with dcm2niix)",
            )
        if np.any(pixdim < 0):
            notes.append(
                f"The header gives negative voxel sizes ({_mm(pixdim)} mm, pixdim); "
                f"their absolute values {_mm(np.abs(pixdim))} mm are used"
            )
            header["pixdim"][1:4] = np.abs(header["pixdim"][1:4])  # as nibabel does on reading
    # An in-memory image made without an affine has none: the header's (as when read back).
    affine = img.affine if img.affine is not None else header.get_best_affine()
    affine = np.asarray(affine, dtype=np.float64)
    known = int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0
    if not known:
        notes.append(NO_ORIENTATION_WARNING)
    return affine, header, known, notes


# A sagittal series has its thickest voxels along left-right (slices ~3-5 mm, pixels < 1 mm).
# A scan is called not sagittal only when one voxel axis is clearly the thickest (this many
# times the others) and points closest to another world axis, or when it is one image thick
# along superior-inferior or anterior-posterior: near-isotropic volumes are given the benefit.
THICK_AXIS_RATIO = 1.5
_WORLD_AXES = ("left-right", "anterior-posterior", "superior-inferior")
_PLANE_OF = {1: "coronal", 2: "axial"}


def sagittal_problem(volume: Volume) -> str | None:
    """Why `volume` is clearly not a sagittal series (a message for InvalidScanError), or None.

    Decided from the file's affine: the voxel sizes (which voxel axis is clearly the
    thickest, i.e. the slice axis) and which world axis that voxel axis is closest to.
    """
    s, h, w = volume.shape
    todo = "Export the sagittal series of the study (slices stacked left to right) and use that"
    if not volume.orientation_known:
        todo += (
            "; the header has no orientation (qform/sform codes 0), so the directions are "
            "guessed: if this is a sagittal series, re-export it with dcm2niix to keep them"
        )
    if h == 1 or w == 1:
        plane = "an axial" if h == 1 else "a coronal"
        return (
            f"The scan is {plane} image ({s} x {h} x {w} voxels left-right x "
            f"superior-inferior x anterior-posterior), not a sagittal series. {todo}"
        )
    columns = np.asarray(volume.affine, dtype=np.float64)[:3, :3]
    zooms = np.sqrt((columns**2).sum(axis=0))
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        return None  # volume_from_nifti rejects these; nothing to judge here
    order = np.argsort(zooms)
    thick = int(order[-1])
    if zooms[thick] < THICK_AXIS_RATIO * zooms[order[1]]:
        return None  # no clearly thickest axis (near-isotropic): no clear evidence
    direction = np.abs(columns[:, thick]) / zooms[thick]
    world = int(np.argmax(direction))
    if world == 0:
        return None
    angle = float(np.degrees(np.arccos(min(1.0, direction[0]))))
    inplane = _mm(zooms[[k for k in range(3) if k != thick]])
    return (
        f"The scan looks {_PLANE_OF[world]}, not sagittal: its thickest voxels "
        f"({zooms[thick]:.3g} mm, voxel axis {thick}) are stacked along {_WORLD_AXES[world]} "
        f"({angle:.0f} degrees from left-right), with {inplane} mm pixels in its slices; "
        f"sagittal slices are thickest along left-right. {todo}"
    )


def check_sagittal(volume: Volume) -> None:
    """Raise InvalidScanError when `volume` is clearly not a sagittal acquisition (axial or
    coronal slices would be resliced into meaningless "sagittal" images); see
    sagittal_problem. One-slice sagittal volumes and near-isotropic volumes pass."""
    problem = sagittal_problem(volume)
    if problem is not None:
        raise InvalidScanError(problem)


# ----------------------------------------------------------------------------- Volume


@dataclass
class Volume:
    """A scan in display layout plus what is needed to write results in its own geometry.

    data: float32 [S, H, W], S sagittal slices, rows superior->inferior, cols anterior->posterior.
    spacing: (slice_mm, row_mm, col_mm). affine/header/original_shape/orientation: the file's.
    orientation_known: False when the header has no orientation (qform and sform codes 0).
    geometry_warnings: what the user should be told about the scan as read: its geometry,
        a 4D file's first volume used, NaN voxels replaced (one sentence each).
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    orientation: str
    name: str
    header: nib.Nifti1Header | None = None
    original_shape: tuple[int, int, int] = (0, 0, 0)
    transform: np.ndarray = field(default_factory=lambda: np.zeros((3, 2)))
    orientation_known: bool = True  # False: qform and sform codes 0, directions are guessed
    geometry_warnings: list[str] = field(default_factory=list)  # for the page and the CLI
    dicom: Any = None  # spine.dicom.DicomReference when read from DICOM (for DICOM SEG)

    @property
    def num_slices(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Display shape (S, H, W)."""
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    def slice(self, i: int) -> np.ndarray:
        """Sagittal slice i, float32 [H, W] (rows superior->inferior, cols anterior->posterior)."""
        if not -self.num_slices <= i < self.num_slices:
            raise IndexError(f"slice {i} out of range for {self.num_slices} slices")
        return self.data[i]

    @property
    def canonical_affine(self) -> np.ndarray:
        """Affine of the display layout: display voxel (s, r, c) -> world (RAS mm)."""
        return self.affine @ nio.inv_ornt_aff(self.transform, self.original_shape)

    def to_original(self, array: np.ndarray) -> np.ndarray:
        """A display-layout array [S, H, W, ...] -> the file's voxel layout (exact inverse)."""
        back = nio.ornt_transform(
            nio.axcodes2ornt(CANONICAL_AXCODES), nio.io_orientation(self.affine)
        )
        return np.ascontiguousarray(nio.apply_orientation(array, back))

    def labels_to_nifti(self, labels: np.ndarray) -> nib.Nifti1Image:
        """Label map int [S, H, W] -> NIfTI in the file's voxel layout, affine and an int dtype."""
        labels = np.asarray(labels)
        if labels.shape != self.data.shape:
            raise ValueError(f"labels shape {labels.shape} != volume shape {self.data.shape}")
        if labels.dtype.kind not in "iub":
            if not np.all(np.equal(np.mod(labels, 1), 0)):
                raise ValueError("labels must be integer valued")
        top = int(labels.max()) if labels.size else 0
        low = int(labels.min()) if labels.size else 0
        dtype = np.uint8 if low >= 0 and top <= 255 else np.int16 if top < 32768 else np.int32
        out = self.to_original(labels.astype(dtype))
        source = self.header
        if isinstance(source, nib.Nifti1Header) and not isinstance(source, nib.Nifti2Header):
            header = source.copy()
        else:  # NIfTI-2 (or none): a fresh NIfTI-1 header with the same units and affine
            header = nib.Nifti1Header()
            if isinstance(source, nib.Nifti1Header):
                header.set_xyzt_units(*source.get_xyzt_units())
        header.set_data_dtype(dtype)
        header.set_slope_inter(1.0, 0.0)
        header["cal_min"], header["cal_max"] = 0, top
        header.set_intent("label")
        header["descrip"] = b"SpineSeg vertebra labels"
        img = nib.Nifti1Image(out, self.affine, header=header)
        # The codes mirror the scan's: a scan without orientation (codes 0) must not get a
        # label map that claims scanner space. Without any header: scanner (1), as before.
        if isinstance(source, nib.Nifti1Header):
            qform, qcode = source.get_qform(coded=True)
            scode = int(source["sform_code"])
        else:
            qform, qcode, scode = None, 1, 1
        img.set_sform(self.affine, code=scode)
        img.set_qform(qform if qform is not None else self.affine, code=int(qcode))
        return img

    def load_label_map(self, source: str | Path | bytes | nib.Nifti1Image) -> np.ndarray:
        """A label map NIfTI for this scan -> int32 [S, H, W] (see module-level load_label_map)."""
        return load_label_map(source, like=self)

    def from_labels_nifti(self, img: nib.Nifti1Image) -> np.ndarray:
        """Inverse of labels_to_nifti: a label image of this scan -> int32 [S, H, W]."""
        return load_label_map(img, like=self)


def volume_from_nifti(img: nib.Nifti1Image, name: str = "scan") -> Volume:
    """An in-memory nibabel image -> checked Volume in display layout."""
    loaded: list[str] = []  # what reading changed (4D, NaN): said beside the geometry notes
    data = _as_3d(img, notes=loaded)
    shape3 = tuple(int(s) for s in data.shape)
    finite = np.isfinite(data)
    if not finite.all():
        if not finite.any():
            raise _fail("Every voxel of the scan is NaN or infinite", "Re-export the scan")
        bad = int((~finite).sum())
        msg = f"{name}: {bad} NaN/inf voxels set to the smallest finite value"
        logger.warning(msg)
        warnings.warn(msg, stacklevel=2)
        loaded.append(f"{bad} NaN/inf voxels were set to the smallest finite value (shown as "
                      "background)")
        data = np.where(finite, data, data[finite].min()).astype(np.float32)
    del finite  # a bool per voxel, not needed for the display-layout copy below
    if float(data.max()) == float(data.min()):
        raise _fail(
            f"The scan is constant (every voxel = {float(data.min()):g}); there is no image",
            "Check the export (a mask or an empty series was uploaded?)",
        )
    affine, header, known, notes = _header_geometry(img)
    zooms = _spacing(affine)
    transform = _orientation_transform(affine)
    spacing = np.zeros(3)
    spacing[transform[:, 0].astype(int)] = zooms
    for note in notes:
        logger.warning("%s: %s", name, note)
        warnings.warn(f"{name}: {note}", stacklevel=2)
    return Volume(
        data=np.ascontiguousarray(nio.apply_orientation(data, transform), dtype=np.float32),
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        affine=affine,
        orientation="".join(nio.aff2axcodes(affine)),
        name=name,
        header=header,
        original_shape=shape3,  # type: ignore[arg-type]
        transform=transform,
        orientation_known=known,
        geometry_warnings=[*loaded, *notes],
    )


# A lumbar sagittal field of view is ~280-320 mm over a 512 matrix, slices ~4 mm thick:
# what a PNG slice without geometry is assumed to have.
ASSUMED_PIXEL_MM = 300.0 / 512.0
ASSUMED_SLICE_MM = 4.0


def volume_from_image(
    image: np.ndarray,
    name: str = "image",
    pixel_mm: float = ASSUMED_PIXEL_MM,
    slice_mm: float = ASSUMED_SLICE_MM,
) -> Volume:
    """A 2D slice (grey [H, W], or RGB [H, W, 3] averaged to grey) in the display layout
    (cranial at the top, anterior on the left) -> a one-slice Volume.

    PNG exports carry no geometry: pixel_mm and slice_mm are assumptions (millimetres in
    the measurements are only as right as they are), the orientation is the display layout.
    """
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=-1)
    if array.ndim != 2:
        raise _fail(f"An image slice must be 2D, got shape {array.shape}", "Export one slice")
    # Voxel axes (slice, row, col) point Right, Inferior, Posterior: the canonical layout.
    affine = np.array(
        [[slice_mm, 0, 0, 0], [0, 0, -pixel_mm, 0], [0, -pixel_mm, 0, 0], [0, 0, 0, 1]],
        dtype=np.float64,
    )
    volume = volume_from_nifti(nib.Nifti1Image(array[None], affine), name=name)
    volume.geometry_warnings.append(
        f"A 2D image carries no geometry: {pixel_mm:.2f} mm pixels and a {slice_mm:g} mm slice "
        "are assumed, so millimetres are estimates; orientation taken as shown (head at the "
        "top, anterior on the left)."
    )
    return volume


def load_image_slice(source: str | Path | bytes, name: str | None = None) -> Volume:
    """A 2D sagittal slice saved as PNG/JPEG (path or bytes) -> a one-slice Volume with the
    assumed geometry of volume_from_image. Raises InvalidScanError for an unreadable image."""
    from PIL import Image, UnidentifiedImageError

    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    default = Path(source).stem if isinstance(source, (str, Path)) else "image"
    try:
        with Image.open(io.BytesIO(data)) as pil:
            if pil.width * pil.height > MAX_IMAGE_PIXELS:
                raise _fail(
                    f"The image is {pil.width} x {pil.height} pixels, more than a slice has",
                    "Export the slice at its acquired size",
                )
            grey = np.asarray(pil.convert("L"))
    except (UnidentifiedImageError, OSError) as err:
        raise _fail(f"Not a readable PNG/JPEG image ({err})", "Export the slice as PNG") from err
    return volume_from_image(grey, name=name or default)


def is_dicom_source(source: str | Path | bytes, filename: str = "") -> bool:
    """True for a DICOM input: a folder, a .zip/.dcm name, or bytes/a file with the zip or
    DICM magic (DICOM files often have no extension at all)."""
    if filename.lower().endswith(DICOM_SUFFIXES):
        return True
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:132])
    else:
        path = Path(source)
        if path.is_dir() or path.name.lower().endswith(DICOM_SUFFIXES):
            return True
        try:
            with open(path, "rb") as f:
                head = f.read(132)
        except OSError:
            return False
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or head[128:132] == b"DICM"


def load_scan(source: str | Path | bytes, filename: str, name: str | None = None) -> Volume:
    """A NIfTI volume, a PNG/JPEG slice, or a DICOM series (folder, .zip, .dcm; see
    spine.dicom): the one entry for uploads. A DICOM Volume is named after its series
    (spine.dicom.default_name), never after the file, whose name often carries the patient's."""
    if filename.lower().endswith(IMAGE_SUFFIXES):
        return load_image_slice(source, name)
    if not filename.lower().endswith(NIFTI_SUFFIXES) and is_dicom_source(source, filename):
        from spine.dicom import load_dicom_series  # lazy: pydicom is only needed for DICOM

        return load_dicom_series(source)
    return load_volume(source, name)


def load_volume(source: str | Path | bytes, name: str | None = None) -> Volume:
    """Read a NIfTI scan (path or bytes, gzipped or not) into a checked display-layout Volume.

    Raises InvalidScanError with what is wrong and what to do for unusable input.
    """
    img, default_name = _read_nifti(source)
    return volume_from_nifti(img, name or default_name)


def load_label_map(source: str | Path | bytes | nib.Nifti1Image, like: Volume) -> np.ndarray:
    """A label map for `like` -> int32 [S, H, W] in display layout.

    The map may be stored in another voxel order than the scan, as long as it covers the
    same voxels in the world (same display shape and affine); otherwise InvalidScanError.
    """
    img = source if isinstance(source, nib.Nifti1Image) else _read_nifti(source)[0]
    data = _as_3d(img, "label map")
    if not np.all(np.isfinite(data)) or not np.all(np.mod(data, 1) == 0):
        raise _fail(
            "The label map has non-integer values", "Use an integer label map (0 = background)"
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    transform = _orientation_transform(affine)
    labels = np.ascontiguousarray(nio.apply_orientation(data, transform)).astype(np.int32)
    canon = affine @ nio.inv_ornt_aff(transform, data.shape)
    if labels.shape != like.data.shape:
        raise _fail(
            f"The label map's shape {data.shape} does not match the scan's {like.original_shape}",
            "Use the label map made for this scan",
        )
    scale = float(np.abs(like.canonical_affine[:3, :3]).max())
    if not np.allclose(canon, like.canonical_affine, atol=1e-3 * max(scale, 1.0)):
        raise _fail(
            "The label map's affine (position/orientation) does not match the scan's",
            "Use the label map made for this scan, saved with the scan's affine",
        )
    return labels


# ----------------------------------------------------------------------------- windowing


def percentile_range(
    image: np.ndarray, low: float = WINDOW_PERCENTILES[0], high: float = WINDOW_PERCENTILES[1]
) -> tuple[float, float]:
    """The low and high intensity percentiles of image (as float32), (0, 0) when empty: the
    window of the model input (window_percentile) and of the page (export.percentile_window)."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [low, high]) if image.size else (0.0, 0.0)
    return lo, hi


def window_percentile(
    image: np.ndarray, low: float = WINDOW_PERCENTILES[0], high: float = WINDOW_PERCENTILES[1]
) -> np.ndarray:
    """Any-shape intensities -> uint8, mapping the low..high percentiles to 0..255."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = percentile_range(image, low, high)
    if hi <= lo:
        hi = lo + 1e-6 if image.size == 0 else float(image.max())
    if hi <= lo:
        return np.zeros(image.shape, np.uint8)
    if image.ndim < 3:
        return _to_uint8((image - lo) / (hi - lo))
    # Slice by slice into the output: float temporaries of one chunk, not of the volume
    # (a 512^3 scan would otherwise need ~2 GB of them); the same numbers either way.
    out = np.empty(image.shape, np.uint8)
    step = max(1, (1 << 20) // max(1, image[0].size))  # ~1 M voxels (4 MB of float32) a chunk
    for start in range(0, image.shape[0], step):
        out[start : start + step] = _to_uint8((image[start : start + step] - lo) / (hi - lo))
    return out


def window_level(image: np.ndarray, window: float, level: float) -> np.ndarray:
    """Any-shape intensities -> uint8 with a radiology window (width) and level (centre)."""
    if window <= 0:
        raise ValueError(f"window must be > 0, got {window}")
    image = np.asarray(image, dtype=np.float32)
    return _to_uint8((image - (level - window / 2.0)) / window)


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def slice_channels(stack: np.ndarray, index: int, neighbours: bool = False) -> np.ndarray:
    """The network's 3-channel image of slice `index` of a windowed stack uint8 [S, H, W].

    neighbours False: the slice repeated in R, G and B -> [H, W, 3].
    neighbours True: (slice index-1, index, index+1) in (R, G, B), the "2.5D" input; at the
    first and last slice the missing neighbour is the slice itself (edge replication).
    """
    if not neighbours:
        return np.repeat(stack[index][..., None], 3, axis=-1)
    last = stack.shape[0] - 1
    picks = (max(index - 1, 0), index, min(index + 1, last))
    return np.stack([stack[i] for i in picks], axis=-1)


# ----------------------------------------------------------------------------- label maps


def label_instances(labels: np.ndarray, min_area: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label slice int [H, W] -> (masks bool [H, W, N], values [N]): one channel per label
    value > 0 (ascending, i.e. top to bottom), dropping instances below min_area pixels.

    The one label-map -> instance-masks conversion (training, evaluation, export).
    """
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    values = values[counts >= max(min_area, 1)]
    return labels[..., None] == values[None, None, :], values


def labelled_slices(labels: np.ndarray, min_area: int = 0, empty_slices: int = 0) -> list[int]:
    """Indices of slices of a label volume [S, H, W] with at least one instance >= min_area
    pixels, plus up to empty_slices evenly spread slices without any."""
    full = [s for s in range(labels.shape[0]) if label_instances(labels[s], min_area)[1].size]
    empty = [s for s in range(labels.shape[0]) if s not in full]
    if empty_slices > 0 and empty:
        picks = np.linspace(0, len(empty) - 1, min(empty_slices, len(empty))).round().astype(int)
        full += [empty[i] for i in sorted(set(picks.tolist()))]
    return sorted(full)


# ----------------------------------------------------------------------------- writing


def save_nifti(img: nib.Nifti1Image, path: str | Path) -> Path:
    """Write a NIfTI image atomically (gzip when the name ends in .nii.gz)."""
    return atomic_write(Path(path), lambda tmp: nib.save(img, str(tmp)))


def nifti_bytes(img: nib.Nifti1Image) -> bytes:
    """A NIfTI image as gzipped .nii.gz bytes (for downloads)."""
    single = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, header=img.header)
    return gzip.compress(single.to_bytes(), compresslevel=6, mtime=0)


def save_image(image: np.ndarray, path: str | Path, quality: int = 95) -> Path:
    """Write a uint8 [H, W] or RGB [H, W, 3] image as PNG/JPEG (by extension), atomically."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_SUFFIXES:
        raise ValueError(f"unsupported image extension {ext!r} (use .png or .jpg)")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    bgr = image[..., ::-1] if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext != ".png" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr), params)
    if not ok:
        raise OSError(f"could not encode {path}")
    return atomic_write(path, lambda tmp: tmp.write_bytes(buf.tobytes()))


def export_slices(
    volume: Volume,
    out_dir: str | Path,
    fmt: str = "png",
    indices: list[int] | None = None,
    low: float = WINDOW_PERCENTILES[0],
    high: float = WINDOW_PERCENTILES[1],
) -> list[Path]:
    """Write sagittal slices as uint8 grayscale images NAME_sNNN.<fmt>, windowed per volume.

    The paper annotated JPEG slices exported like this; PNG avoids compression artefacts.
    """
    stack = window_percentile(volume.data, low, high)  # [S, H, W] uint8, one window per volume
    indices = list(range(volume.num_slices)) if indices is None else indices
    suffix = "." + fmt.lstrip(".")
    return [save_image(stack[i], Path(out_dir) / slice_image_name(volume.name, i, suffix))
            for i in indices]  # fmt: skip
