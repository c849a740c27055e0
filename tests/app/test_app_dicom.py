"""The page takes a zipped DICOM series: it loads in the series' geometry and says which
series it is (description and date, never the patient's name)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

pytest.importorskip("pydicom")

APP = Path(__file__).resolve().parents[2] / "app.py"


@pytest.fixture(scope="module")
def study_zip(tmp_path_factory) -> bytes:
    import importlib.util

    from spine.phantom import make_phantom

    path = Path(__file__).resolve().parents[1] / "spine" / "test_dicom.py"
    spec = importlib.util.spec_from_file_location("spine_test_dicom", path)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    series_datasets, write_series = helpers.series_datasets, helpers.write_series

    phantom = make_phantom(5, size=64, num_slices=6, orientation="LPS")
    folder = write_series(series_datasets(phantom.image), tmp_path_factory.mktemp("dicom"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder:
            archive.writestr(f"DOE_JANE/{path.name}", path.read_bytes())
    return buffer.getvalue()


def test_a_zipped_dicom_series_uploads_and_says_which_series(study_zip):
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.file_uploader[0].upload("DOE_JANE.zip", study_zip, "application/zip")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    volume = at.session_state["volume"]
    assert volume.dicom is not None and volume.shape == (6, 64, 64)
    captions = "\n".join(str(c.value) for c in at.caption)
    assert "Series 4: T2 TSE SAG" in captions and "2024-01-31" in captions
    page = captions + "\n".join(str(m.value) for m in at.markdown)
    assert "Doe" not in page and "DOE" not in page
