"""DICOM in: a folder, a list of files or a .zip of a study -> its series -> a Volume.

One job per module:

    files.py     which files an input is (folder, file, bytes, list); headers via pydicom
    zips.py      zips read in memory, capped, no traversal or symlinks
    headers.py   per-frame geometry (classic and enhanced multi-frame), sequence hints
    series.py    SeriesInfo (no patient identity), preselection, refusal reasons, names
    study.py     grouping by SeriesInstanceUID into series; the entry points below
    geometry.py  frames -> Volume with the exact affine; missing/duplicate/uneven slices
    pixels.py    decoding (pydicom's pixel-data handlers) and rescale slope/intercept

Decisions: a single sagittal image with geometry is a one-slice volume (with a warning);
CT and other modalities with geometry load with a warning (the model was trained on MR);
axial and coronal series are listed but refused for segmentation. Zips are read in memory,
never extracted; their size, member count and member kinds are capped. DICOM out (the
SEG) is spine.dicom_seg.

Reader: pydicom (maintained, pure Python, the reader highdicom builds on, so the SEG's
source datasets are the ones read here), with pylibjpeg (+ -libjpeg, -openjpeg) and pyjpegls
as its pixel-data handlers: wheels on PyPI for JPEG baseline/extended/lossless, JPEG-LS and
JPEG 2000; RLE and deflate need nothing more. python-gdcm would cover the same syntaxes but
is one large binary; it is not required, and pydicom uses it when it is installed. Any other
syntax (e.g. MPEG video) is refused naming the syntax and what to install (DECODERS_HINT).
"""

from __future__ import annotations

from spine.dicom.errors import DicomInputError, NotSagittalError
from spine.dicom.files import DICOM_FILE_SUFFIXES, folder_has_dicom, is_dicom, looks_like_dicom_path
from spine.dicom.geometry import DicomReference
from spine.dicom.headers import PLANES, plane_of, sequence_hint
from spine.dicom.pixels import DECODERS_HINT
from spine.dicom.series import SeriesInfo, default_name, not_sagittal_reason, preselect
from spine.dicom.study import DicomStudy, list_series, load_dicom_series
from spine.dicom.zips import MAX_ZIP_BYTES, MAX_ZIP_MEMBERS, is_zip

__all__ = [
    "DECODERS_HINT",
    "DICOM_FILE_SUFFIXES",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_MEMBERS",
    "PLANES",
    "DicomInputError",
    "DicomReference",
    "DicomStudy",
    "NotSagittalError",
    "SeriesInfo",
    "default_name",
    "folder_has_dicom",
    "is_dicom",
    "is_zip",
    "list_series",
    "load_dicom_series",
    "looks_like_dicom_path",
    "not_sagittal_reason",
    "plane_of",
    "preselect",
    "sequence_hint",
]
