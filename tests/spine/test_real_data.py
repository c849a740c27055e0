"""The real data set in ../shared/data/real: every scan and label map loads and matches."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from spine.volume import load_label_map, load_volume

REAL = Path(__file__).parents[2].parent / "shared" / "data" / "real"
pytestmark = pytest.mark.skipif(
    not REAL.is_dir(), reason=f"real data folder {REAL} is absent (see DESIGN.md, Data)"
)


def index_rows() -> list[dict]:
    if not REAL.is_dir():
        return []
    with open(REAL / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_index_lists_every_file():
    rows = index_rows()
    assert len(rows) == 61
    listed = {r["image"] for r in rows} | {r["vertebrae"] for r in rows}
    on_disk = {p.name for p in REAL.glob("*.nii.gz")}
    assert listed == on_disk


@pytest.mark.parametrize("row", index_rows(), ids=lambda r: r["image"].split(".")[0])
def test_scan_and_label_map_load_and_match(row):
    vol = load_volume(REAL / row["image"])
    labels = load_label_map(REAL / row["vertebrae"], like=vol)
    n = int(row["n_vertebrae"])
    assert labels.shape == vol.data.shape
    assert np.array_equal(np.unique(labels), np.arange(n + 1))  # 0 and 1..N
    assert vol.orientation == row["orientation"]
    x, y, z = (int(v) for v in row["shape"].split("x"))
    assert vol.original_shape == (x, y, z)
    assert vol.spacing[0] > vol.spacing[1]  # sagittal slices are thicker than the pixels
    rows = [np.nonzero(labels == k)[1].mean() for k in range(1, n + 1)]
    assert np.all(np.diff(rows) > 0)  # 1 is the highest body
