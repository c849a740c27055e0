"""A series' frames -> a Volume with its exact geometry: frames sorted along the slice
normal, duplicates dropped (identical) or refused (different), missing slices and uneven
spacing reported, the affine from ImagePositionPatient, ImageOrientationPatient and
PixelSpacing (DICOM LPS -> NIfTI RAS: x and y negated). The Volume is then made by
spine.volume.volume_from_nifti, so everything downstream is the same as for a NIfTI scan."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from spine.dicom.errors import fail
from spine.dicom.headers import Frame, as_float, slice_normal
from spine.dicom.pixels import read_pixels
from spine.dicom.series import SeriesInfo

if TYPE_CHECKING:
    from spine.dicom.files import Source
    from spine.dicom.study import Series

logger = logging.getLogger(__name__)


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


def spacing_problem(d: np.ndarray) -> tuple[str | None, list[str]]:
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


def build_volume(series: Series, files: list[Source], name: str) -> Any:
    """The series as a checked Volume (volume.dicom: its DicomReference for a SEG)."""
    from spine.volume import volume_from_nifti

    info = series.info
    label = info.label
    if any(f is None for f in series.frames):
        kind = "multi-frame images without per-frame geometry" if any(
            int(as_float(h.get("NumberOfFrames"), 1) or 1) > 1 for h in series.headers
        ) else "images without position, orientation or pixel spacing"  # fmt: skip
        raise fail(
            f"{label}: {kind} (ImagePositionPatient/ImageOrientationPatient/PixelSpacing), "
            "so the scan has no geometry (a secondary capture or screenshot?)",
            "Export the original MR series from the scanner or PACS",
        )
    for header in series.headers:
        if "MOSAIC" in [str(v).upper() for v in header.get("ImageType", [])]:
            raise fail(
                f"{label}: Siemens mosaic images (diffusion or functional MRI)",
                "Use a structural sagittal series (T2 or T1), not DTI/fMRI",
            )
        if int(header.get("SamplesPerPixel", 1)) != 1:
            raise fail(f"{label}: colour images, not MR", "Use the grey-scale MR series")
    frames: list[Frame] = list(series.frames)  # type: ignore[arg-type]
    notes: list[str] = []
    ori = frames[0].orientation
    if any(np.max(np.abs(np.subtract(f.spacing, frames[0].spacing))) > 1e-4 for f in frames):
        raise fail(f"{label}: the pixel spacing changes between images", "Re-export it")
    normal = slice_normal(ori)
    frames.sort(key=lambda f: float(f.position @ normal))
    d = np.array([f.position @ normal for f in frames])
    pixels = read_pixels(series, files, frames, label)
    # duplicates: images at one position are dropped when identical, refused otherwise
    keep = [0]
    for i in range(1, len(frames)):
        if abs(d[i] - d[keep[-1]]) < 1e-2:
            if not np.array_equal(pixels[i], pixels[keep[-1]]):
                raise fail(
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
        problem, warn = spacing_problem(d)
        if problem:
            raise fail(
                f"{label}: {problem}",
                "Export the complete series (all its files) again; an incomplete upload or "
                "a series of separate stacks cannot be made into one volume",
            )
        notes += warn
        step = (frames[-1].position - frames[0].position) / (len(frames) - 1)
        line = frames[0].position + np.arange(len(frames))[:, None] * step
        offset = np.max(np.linalg.norm(np.array([f.position for f in frames]) - line, axis=1))
        if offset > 0.1 * max(np.linalg.norm(step), 1.0):
            raise fail(f"{label}: the slice positions do not lie on a line", "Re-export it")
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
