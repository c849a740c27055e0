"""What the page was given, before it is a scan: uploaded files or a data-folder path ->
DICOM (a study to choose a series of) or one NIfTI/PNG scan; the series table and the
preselected choice; header text made safe for the page's Markdown.

The page (app.py) keeps only the widgets; this is the logic behind them, testable alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spine.dicom import DicomStudy
from spine.errors import SpineInputError
from spine.folders import IMAGE_SUFFIXES, NIFTI_SUFFIXES
from spine.volume import is_dicom_source

# Column headers of series_rows (keys as in SeriesInfo.row); plain text, never Markdown.
SERIES_COLUMNS = {
    "series": "Series",
    "description": "Description",
    "orientation": "Orientation",
    "slices": "Slices",
    "pixel_mm": "Pixel (mm)",
    "slice_mm": "Slice (mm)",
    "sequence": "Sequence (from header)",
    "modality": "Modality",
    "date": "Date",
    "segment": "Can segment",
}


def dicom_uploads(files: Sequence[tuple[str, bytes]]) -> list[bytes] | None:
    """The bytes of uploaded (name, bytes) files when they are DICOM (.dcm files, zips of
    series or studies, any mix of them), None when they are one NIfTI scan or PNG slice.

    Raises SpineInputError for several scans at once or DICOM mixed with other files; the
    message names no file (DICOM file names often carry the patient's name)."""
    dicom = [data for name, data in files if _is_dicom_upload(name, data)]
    others = len(files) - len(dicom)
    if dicom and others:
        raise SpineInputError(
            f"{len(dicom)} DICOM file(s) were uploaded together with {others} other file(s). "
            "Upload either the DICOM files of a study (the .dcm files or a .zip) or one "
            "NIfTI scan or slice image"
        )
    if others > 1:
        raise SpineInputError(
            f"{others} scans were uploaded at once. Upload one NIfTI scan or slice image at "
            "a time (several files at once are for the .dcm files of a DICOM series)"
        )
    return dicom or None


def _is_dicom_upload(name: str, data: bytes) -> bool:
    if name.lower().endswith((*NIFTI_SUFFIXES, *IMAGE_SUFFIXES)):
        return False
    return is_dicom_source(data, name)


def is_dicom_path(path: Path) -> bool:
    """A DICOM input in the data folder: a folder (of .dcm files or of files without an
    extension), a .zip, a .dcm file or any file with the DICM magic."""
    return not path.name.lower().endswith(NIFTI_SUFFIXES) and is_dicom_source(path, path.name)


def read_study(source: Any) -> DicomStudy:
    """The series of a DICOM input (bytes, list of bytes, folder, zip); headers only."""
    return DicomStudy(source)


def series_choice(study: DicomStudy) -> tuple[list[str], int | None]:
    """(the series' keys in listing order, the index of the preselected one: the sagittal
    series most likely T2; None when no series is sagittal)."""
    keys = [info.key for info in study.series]
    pick = study.preselected if len(keys) > 1 else study.series[0]
    return keys, (keys.index(pick.key) if pick is not None else None)


def series_rows(study: DicomStudy) -> list[dict[str, Any]]:
    """One row per series for the page's table (columns: SERIES_COLUMNS)."""
    return [info.row() for info in study.series]


# Characters Markdown or Streamlit's directives act on anywhere (emphasis, code, links,
# HTML, tables, strikethrough, $math$, :color[...] after a colon) or at a line's start.
_ANYWHERE = re.compile(r"([\\`*_\[\]<>#|~$&]|:(?=\S))")
_LINE_START = re.compile(r"^(\s*)([-+=]|\d+[.)])", re.MULTILINE)


def plain(text: str) -> str:
    """text with every Markdown-active character backslash-escaped, so that st.error or
    st.warning shows header text (series descriptions, modalities) exactly as written."""
    text = _ANYWHERE.sub(r"\\\1", text)
    return _LINE_START.sub(lambda m: f"{m[1]}{m[2][:-1]}\\{m[2][-1]}", text)
