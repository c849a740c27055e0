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
import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from spine.errors import InvalidScanError

logger = logging.getLogger(__name__)

# Canonical voxel axis codes: axis0 -> Right (slices), axis1 -> Inferior (rows),
# axis2 -> Posterior (columns). Display: patient faces left, head at the top.
CANONICAL_AXCODES = ("R", "I", "P")
MAX_VOXELS = 512**3  # a larger scan is almost certainly not a spine series
MAX_IMAGE_PIXELS = 4096 * 4096  # a PNG slice larger than this is not an MR slice
MAX_DECOMPRESSED_BYTES = 1 << 30  # 1 GiB of raw NIfTI (512^3 float64 plus header)
NIFTI_EXTENSIONS = (".nii", ".nii.gz")


def _fail(what: str, todo: str) -> InvalidScanError:
    return InvalidScanError(f"{what}. {todo}")


# ----------------------------------------------------------------------------- reading


def _read_source(source: str | Path | bytes | bytearray) -> tuple[bytes, str]:
    """Path or bytes -> (raw bytes as stored, default name). Checks the path's extension."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "upload"
    path = Path(source)
    name = path.name
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise _fail(
            f"'{name}' is not a NIfTI file name (expected .nii or .nii.gz)",
            "Convert the scan to NIfTI (e.g. with dcm2niix) and pass the .nii/.nii.gz file",
        )
    if not path.is_file():
        raise _fail(f"No such file: {path}", "Check the path")
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name[: -len(".nii")]
    return path.read_bytes(), stem


def _read_capped(stream: io.BufferedIOBase, limit: int, chunk: int = 16 << 20) -> bytes:
    """Read to EOF or `limit` bytes in chunks (gz.read(limit) reserves `limit` bytes up front)."""
    parts, size = [], 0
    while size < limit:
        part = stream.read(min(chunk, limit - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _decompress(raw: bytes) -> bytes:
    """Gunzip if the bytes start with the gzip magic; cap the decompressed size."""
    if raw[:2] != b"\x1f\x8b":
        if len(raw) > MAX_DECOMPRESSED_BYTES:
            raise _fail(
                f"The file is larger than {MAX_DECOMPRESSED_BYTES / 2**20:.0f} MiB",
                "Crop or downsample the scan",
            )
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
            out = _read_capped(gz, MAX_DECOMPRESSED_BYTES + 1)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise _fail(
            f"The gzip data is truncated or corrupt ({exc})",
            "Upload the complete .nii.gz file again (the transfer may have been cut off)",
        ) from None
    if len(out) > MAX_DECOMPRESSED_BYTES:
        raise _fail(
            f"The scan decompresses to more than {MAX_DECOMPRESSED_BYTES / 2**20:.0f} MiB",
            "Crop or downsample the scan",
        )
    return out


def _parse_nifti(raw: bytes) -> nib.Nifti1Image:
    """Uncompressed single-file NIfTI-1/2 bytes -> image (header checked before data is read)."""
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
            "Upload a .nii or .nii.gz scan; convert DICOM with dcm2niix first",
        )
    try:
        header = klass.header_class.from_fileobj(io.BytesIO(raw))
        shape = tuple(int(s) for s in header.get_data_shape())
    except Exception as exc:  # nibabel raises many types on bad headers
        raise _fail(f"The NIfTI header is invalid ({exc})", "Re-export the scan") from None
    nvox = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if len(shape) >= 3 and int(np.prod(shape[:3], dtype=np.int64)) > MAX_VOXELS:
        raise _fail(
            f"The scan is too large ({'x'.join(map(str, shape[:3]))} voxels, limit 512^3)",
            "Crop or downsample it",
        )
    needed = int(header.get_data_offset()) + nvox * header.get_data_dtype().itemsize
    if len(raw) < needed:
        raise _fail(
            f"The NIfTI file is truncated ({len(raw)} of {needed} bytes)",
            "Upload the complete file again",
        )
    try:
        return _keep_raw_pixdim(klass.from_bytes(raw), raw)
    except Exception as exc:
        raise _fail(f"The NIfTI file cannot be read ({exc})", "Re-export the scan") from None


def _read_nifti(source: str | Path | bytes) -> tuple[nib.Nifti1Image, str]:
    raw, default_name = _read_source(source)
    if not raw:
        raise _fail("The file is empty", "Upload a .nii or .nii.gz scan")
    return _parse_nifti(_decompress(raw)), default_name


def _as_3d(img: nib.Nifti1Image, what: str = "scan") -> np.ndarray:
    """Image -> float32 3D array in the file's voxel layout (first volume of 4D data)."""
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
    header = type(img.header).from_fileobj(io.BytesIO(raw), check=False)
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
    geometry_warnings: what the user should be told about the geometry (one sentence each).
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

    def to_display(self, array: np.ndarray) -> np.ndarray:
        """An array in the file's voxel layout [X, Y, Z, ...] -> display layout [S, H, W, ...]."""
        return np.ascontiguousarray(nio.apply_orientation(array, self.transform))

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
    data = _as_3d(img)
    shape3 = tuple(int(s) for s in data.shape)
    finite = np.isfinite(data)
    if not finite.all():
        if not finite.any():
            raise _fail("Every voxel of the scan is NaN or infinite", "Re-export the scan")
        bad = int((~finite).sum())
        msg = f"{name}: {bad} NaN/inf voxels set to the smallest finite value"
        logger.warning(msg)
        warnings.warn(msg, stacklevel=2)
        data = np.where(finite, data, data[finite].min()).astype(np.float32)
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
        geometry_warnings=notes,
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


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


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


DICOM_EXTENSIONS = (".zip", ".dcm", ".dicom", ".ima")


def is_dicom_source(source: str | Path | bytes, filename: str = "") -> bool:
    """True for a DICOM input: a folder, a .zip/.dcm name, or bytes/a file with the zip or
    DICM magic (DICOM files often have no extension at all)."""
    if filename.lower().endswith(DICOM_EXTENSIONS):
        return True
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:132])
    else:
        path = Path(source)
        if path.is_dir() or path.name.lower().endswith(DICOM_EXTENSIONS):
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
    if filename.lower().endswith(IMAGE_EXTENSIONS):
        return load_image_slice(source, name)
    if not filename.lower().endswith(NIFTI_EXTENSIONS) and is_dicom_source(source, filename):
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


def window_percentile(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Any-shape intensities -> uint8, mapping the low..high percentiles to 0..255."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [low, high]) if image.size else (0.0, 0.0)
    if hi <= lo:
        hi = lo + 1e-6 if image.size == 0 else float(image.max())
    if hi <= lo:
        return np.zeros(image.shape, np.uint8)
    return _to_uint8((image - lo) / (hi - lo))


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


# ----------------------------------------------------------------------------- network frame


@dataclass(frozen=True)
class SquareFrame:
    """How a native [H, W] slice sits in a [size, size] network square (and back).

    scale: resized / native; window: (y1, x1, y2, x2) of the image inside the square;
    padding: [(top, bottom), (left, right), (0, 0)] as mrcnn.utils.resize_image returns it.
    """

    native_shape: tuple[int, int]
    size: int
    scale: float
    window: tuple[int, int, int, int]
    padding: tuple = ((0, 0), (0, 0), (0, 0))

    def to_native(self, mask: np.ndarray, threshold: float | None = 0.5) -> np.ndarray:
        """[size, size(, N)] mask/probabilities -> [H, W(, N)] on the native slice grid.

        The window is cut out and resampled bilinearly to (H, W); bool output when threshold
        is not None (so a mask made by to_square comes back where it was).
        """
        y1, x1, y2, x2 = self.window
        crop = np.asarray(mask)[y1:y2, x1:x2].astype(np.float32)
        out = _resize_stack(crop, self.native_shape, cv2.INTER_LINEAR)
        return out >= threshold if threshold is not None else out

    def to_square(self, mask: np.ndarray) -> np.ndarray:
        """Native bool [H, W(, N)] masks -> [size, size(, N)] (mrcnn.utils.resize_mask)."""
        from mrcnn.utils import resize_mask  # lazy: mrcnn.utils imports keras

        mask = np.asarray(mask, bool)
        flat = mask.ndim == 2
        out = resize_mask(mask[..., None] if flat else mask, self.scale, list(self.padding))
        return out[..., 0] if flat else out

    def boxes_to_native(self, boxes: np.ndarray) -> np.ndarray:
        """[N, (y1, x1, y2, x2)] square pixels -> native pixels (float)."""
        y1, x1 = self.window[:2]
        return (np.asarray(boxes, np.float64) - [y1, x1, y1, x1]) / self.scale


def fit_to_square(image: np.ndarray, size: int) -> tuple[np.ndarray, SquareFrame]:
    """[H, W(, C)] image -> ([size, size(, C)] resized + zero-padded, frame for the inverse).

    The longer side becomes `size` (aspect kept), centred, exactly as Matterport's "square"
    mode with IMAGE_MIN_DIM = IMAGE_MAX_DIM = size (mrcnn.utils.resize_image).
    """
    from mrcnn.utils import resize_image  # lazy: mrcnn.utils imports keras

    image = np.asarray(image)
    h, w = image.shape[:2]
    flat = image.ndim == 2
    out, window, scale, padding, _ = resize_image(
        image[..., None] if flat else image, min_dim=size, max_dim=size, mode="square"
    )
    frame = SquareFrame((h, w), size, float(scale), tuple(int(v) for v in window),
                        tuple(tuple(int(v) for v in p) for p in padding))  # fmt: skip
    return (out[..., 0] if flat else out), frame


def _resize_stack(array: np.ndarray, shape: tuple[int, int], interp: int) -> np.ndarray:
    """cv2.resize for [h, w] or [h, w, N] (any N, including 0) to `shape` (rows, cols)."""
    h, w = shape
    if array.ndim == 2:
        return cv2.resize(array, (w, h), interpolation=interp)
    n = array.shape[2]
    out = np.zeros((h, w, n), dtype=array.dtype)
    for start in range(0, n, 256):  # cv2 handles at most 512 channels at once
        part = cv2.resize(array[..., start : start + 256], (w, h), interpolation=interp)
        out[..., start : start + 256] = part.reshape(h, w, -1)
    return out


# ----------------------------------------------------------------------------- label maps


def instance_values(labels: np.ndarray, min_area: int = 0) -> np.ndarray:
    """The label values of a label slice int [H, W] with at least min_area pixels (ascending,
    i.e. top to bottom): the instances label_instances makes channels of."""
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    return values[counts >= max(min_area, 1)]


def label_instances(labels: np.ndarray, min_area: int = 0) -> np.ndarray:
    """Label slice int [H, W] -> bool [H, W, N], one channel per label value (ascending,
    i.e. top to bottom), dropping instances with fewer than min_area pixels."""
    values = instance_values(labels, min_area)
    return labels[..., None] == values[None, None, :]


def labelled_slices(labels: np.ndarray, min_area: int = 0, empty_slices: int = 0) -> list[int]:
    """Indices of slices of a label volume [S, H, W] with at least one instance >= min_area
    pixels, plus up to empty_slices evenly spread slices without any."""
    full = [s for s in range(labels.shape[0]) if label_instances(labels[s], min_area).shape[-1]]
    empty = [s for s in range(labels.shape[0]) if s not in full]
    if empty_slices > 0 and empty:
        picks = np.linspace(0, len(empty) - 1, min(empty_slices, len(empty))).round().astype(int)
        full += [empty[i] for i in sorted(set(picks.tolist()))]
    return sorted(full)


# ----------------------------------------------------------------------------- writing


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call write(tmp_path) then rename it onto path (same folder, so the rename is atomic).

    The temporary file keeps the suffix (.nii.gz, .png, ...) so writers that look at it work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_atomic_write = atomic_write  # the name used before it was public


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
    if ext not in (".png", ".jpg", ".jpeg"):
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
    low: float = 0.5,
    high: float = 99.5,
) -> list[Path]:
    """Write sagittal slices as uint8 grayscale images NAME_sNNN.<fmt>, windowed per volume.

    The paper annotated JPEG slices exported like this; PNG avoids compression artefacts.
    """
    stack = window_percentile(volume.data, low, high)  # [S, H, W] uint8, one window per volume
    indices = list(range(volume.num_slices)) if indices is None else indices
    return [
        save_image(stack[i], Path(out_dir) / f"{volume.name}_s{i:03d}.{fmt.lstrip('.')}")
        for i in indices
    ]
