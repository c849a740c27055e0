"""Which files a DICOM input is: a folder tree, a file, bytes, a zip or a list of those ->
candidate files (bytes in memory or paths on disk), and their headers read with pydicom
(no hand-written parsing). Files that are not DICOM are skipped, not fatal."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spine.dicom import zips
from spine.dicom.errors import fail
from spine.folders import DICOM_FILE_SUFFIXES, DICOM_SUFFIXES

logger = logging.getLogger(__name__)

MAX_FILES = 20_000  # files looked at in one folder tree


@dataclass
class Source:
    """One candidate file: its bytes in memory (zip, upload) or its path on disk."""

    data: bytes | None = None
    path: Path | None = None

    def open(self) -> Any:
        return io.BytesIO(self.data) if self.data is not None else str(self.path)


def is_dicom(raw: bytes) -> bool:
    """True for DICOM Part 10 bytes (the 'DICM' magic after the 128-byte preamble)."""
    return raw[128:132] == b"DICM"


def looks_like_dicom_path(path: str | Path) -> bool:
    """A folder, a .zip or a .dcm/.ima file, or any file with the DICM magic."""
    path = Path(path)
    if path.is_dir() or path.name.lower().endswith(DICOM_SUFFIXES):
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
        if path.name.lower().endswith(DICOM_FILE_SUFFIXES) or looks_like_dicom_path(path):
            return True
    return False


def _folder_sources(folder: Path) -> list[Source]:
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            files.append(Source(path=path))
            if len(files) > MAX_FILES:
                raise fail(
                    f"The folder has more than {MAX_FILES} files",
                    "Point at the folder of one series or study",
                )
    return files


def sources(source: Any) -> list[Source]:
    """A folder, zip, file (path or bytes) or a list of those -> candidate files."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        if zips.is_zip(raw):
            return [Source(data=member) for member in zips.zip_members(raw)]
        return [Source(data=raw)]
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return _folder_sources(path)
        if not path.is_file():
            raise fail(f"No such file or folder: {path}", "Check the path")
        with open(path, "rb") as f:
            head = f.read(4)
        if zips.is_zip(head):
            return [Source(data=member) for member in zips.zip_members(path)]
        return [Source(path=path)]
    if isinstance(source, Sequence):
        return [s for item in source for s in sources(item)]
    raise TypeError(f"unsupported DICOM source {type(source).__name__}")


def read_header(file: Source) -> Any:
    """The dataset without pixel data, or None when the file is not DICOM."""
    import pydicom
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
