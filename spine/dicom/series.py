"""A series summed up for a user, and the choice among several: SeriesInfo (what the page
lists and the CLI names; never the patient's identity), which series is preselected (the
sagittal one most likely T2), why a series cannot be segmented, and a file-name-safe name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


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

    def row(self) -> dict[str, Any]:
        """The series as one row of the page's table (text shown as text, never Markdown)."""
        return {
            "series": self.number,
            "description": self.description,
            "orientation": self.orientation,
            "slices": self.slices,
            "pixel_mm": f"{self.pixel_mm[0]:.2g} x {self.pixel_mm[1]:.2g}"
            if self.pixel_mm else "",
            "slice_mm": round(self.slice_mm, 2) if self.slice_mm else None,
            "sequence": self.sequence,
            "modality": self.modality,
            "date": self.date,
            "segment": "yes" if not_sagittal_reason(self) is None else f"no: {self.orientation}",
        }  # fmt: skip


def not_sagittal_reason(info: SeriesInfo) -> str | None:
    """Why an axial or coronal series cannot be segmented (None for any other series; a
    series without geometry is refused when it is loaded, with its own reason)."""
    if info.orientation not in ("axial", "coronal"):
        return None
    article = "an" if info.orientation == "axial" else "a"
    return (
        f"{info.label} is {article} {info.orientation} series, not sagittal. The model "
        "segments sagittal slices only; choose the sagittal series of the study"
    )


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
