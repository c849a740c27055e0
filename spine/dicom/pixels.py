"""The pixels of a series' frames, decoded by pydicom (with the installed pixel-data
handlers) and rescaled; an encoding that cannot be decoded is named with what to install."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spine.dicom.errors import fail
from spine.dicom.headers import Frame

if TYPE_CHECKING:
    from spine.dicom.files import Source
    from spine.dicom.study import Series

DECODERS_HINT = (
    "install the pixel-data decoders (pip install pylibjpeg pylibjpeg-libjpeg "
    "pylibjpeg-openjpeg pyjpegls, or python-gdcm), or export the series uncompressed"
)


def read_pixels(series: Series, files: list[Source], frames: list[Frame], label: str) -> np.ndarray:
    """The frames' rescaled pixels, float32 [frames, rows, cols]."""
    cache: dict[int, np.ndarray] = {}
    out = np.zeros((len(frames), series.info.rows, series.info.columns), np.float32)
    for k, frame in enumerate(frames):
        if frame.source not in cache:
            cache[frame.source] = _decode(files[frame.source], label)
        array = cache[frame.source]
        array = array[frame.frame] if frame.frame is not None and array.ndim == 3 else array
        if array.shape != out.shape[1:]:
            raise fail(f"{label}: an image has shape {array.shape}", "Re-export the series")
        out[k] = array.astype(np.float32) * frame.slope + frame.intercept
    return out


def _decode(file: Source, label: str) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(file.open(), force=True)
    except Exception as exc:
        raise fail(f"{label}: a file cannot be read ({exc})", "Export the series again") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise fail(
            f"{label}: an image file has no pixel data (truncated?)", "Export the series again"
        )
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        if syntax is not None and syntax.is_compressed:
            raise fail(
                f"{label}: the images are compressed as {syntax.name} ({syntax}), which "
                f"cannot be decoded here ({type(exc).__name__})",
                DECODERS_HINT[0].upper() + DECODERS_HINT[1:],
            ) from None
        raise fail(
            f"{label}: the pixel data cannot be decoded ({type(exc).__name__}: {exc})",
            "Export the series again",
        ) from None
