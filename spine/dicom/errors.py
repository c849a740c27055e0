"""The errors of DICOM input, as SpineInputError subclasses (shown to users as they are)."""

from __future__ import annotations

from spine.errors import InvalidScanError


class DicomInputError(InvalidScanError):
    """DICOM input that cannot be used: no images, unsupported encoding, broken geometry."""


class NotSagittalError(DicomInputError):
    """A DICOM series that is axial or coronal: the model segments sagittal slices only."""


def fail(what: str, todo: str, kind: type[DicomInputError] = DicomInputError) -> Exception:
    """An error whose message says what was wrong, then what to do: 'WHAT. TODO'."""
    return kind(f"{what}. {todo}")
