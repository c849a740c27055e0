"""The page takes DICOM: a zipped study or several .dcm files; it lists the series, preselects
the sagittal T2, lets the user pick another and refuses axial ones with the reason; it says
which series it is (description and date, never the patient's name, header text never read
as Markdown), and a segmented series downloads as a DICOM SEG and a NIfTI label map, both
in the series' geometry."""

from __future__ import annotations

import gzip
import importlib.util
import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

pytest.importorskip("pydicom")

APP = Path(__file__).resolve().parents[2] / "app.py"


def dicom_helpers():
    """series_datasets, write_series and _check_seg from tests/spine/test_dicom.py."""
    path = Path(__file__).resolve().parents[1] / "spine" / "test_dicom.py"
    spec = importlib.util.spec_from_file_location("spine_test_dicom", path)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    return helpers


@pytest.fixture(scope="module")
def helpers():
    return dicom_helpers()


@pytest.fixture(scope="module")
def phantom():
    from spine.phantom import make_phantom

    return make_phantom(5, size=64, num_slices=6, orientation="LPS")


@pytest.fixture(scope="module")
def study(helpers, phantom, tmp_path_factory):
    """A study of three series from one phantom: 2 SAG T1, 4 T2 TSE SAG, 5 T2 *TRA* (axial),
    zipped under folders named after the patient; returns (zip bytes, T2 datasets, T2 files)."""
    folder = tmp_path_factory.mktemp("study")
    t2 = helpers.series_datasets(phantom.image)
    series = {
        "t2": helpers.write_series(t2, folder / "t2"),
        "t1": helpers.write_series(
            helpers.series_datasets(phantom.image, "SAG T1", 2, echo_time=12.0), folder / "t1"
        ),
        "ax": helpers.write_series(
            helpers.series_datasets(phantom.image, "T2 *TRA*", 5, transpose=True), folder / "ax"
        ),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for kind, paths in series.items():
            for path in paths:
                archive.writestr(f"DOE_JANE/{kind}/{path.name}", path.read_bytes())
    return buffer.getvalue(), t2, series["t2"]


def start() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def series_box(at: AppTest):
    (box,) = [s for s in at.sidebar.selectbox if s.label == "DICOM series"]
    return box


def test_a_zipped_study_lists_its_series_and_preselects_the_sagittal_t2(study):
    at = start()
    at.file_uploader[0].upload("DOE_JANE.zip", study[0], "application/zip").run()
    assert not at.exception and not at.error, texts(at.error)
    volume = at.session_state["volume"]
    assert volume.shape == (6, 64, 64) and volume.dicom.info.number == 4
    table = at.dataframe[0].value
    assert table["series"].tolist() == [2, 4, 5]
    assert table["orientation"].tolist() == ["sagittal", "sagittal", "axial"]
    assert table["sequence"].tolist() == ["T1", "T2", "T2"]
    assert table["slices"].tolist() == [6, 6, 64]
    assert table["segment"].tolist() == ["yes", "yes", "no: axial"]
    assert table["description"].tolist() == ["SAG T1", "T2 TSE SAG", "T2 *TRA*"]
    assert series_box(at).value == volume.dicom.info.key
    shown = texts(at.text)
    assert "Series 4: T2 TSE SAG" in shown and "2024-01-31" in shown
    page = shown + texts(at.markdown) + texts(at.caption) + texts(at.warning)
    assert "Doe" not in page and "DOE" not in page
    # ... while the SEG it offers does carry the patient module, and the page says so.
    assert "SEG carries the source's patient module" in texts(at.caption)


def pick(at: AppTest, text: str) -> AppTest:
    box = series_box(at)
    return box.select_index(next(i for i, o in enumerate(box.options) if text in o)).run()


def test_another_series_can_be_picked_and_an_axial_one_is_refused_with_why(study):
    at = start()
    at.file_uploader[0].upload("study.zip", study[0], "application/zip").run()
    pick(at, "SAG T1")
    assert not at.exception and not at.error, texts(at.error)
    assert at.session_state["volume"].dicom.info.number == 2
    assert "Series 2: SAG T1" in texts(at.text)

    pick(at, "TRA")
    assert not at.exception and at.session_state["volume"] is None
    message = texts(at.error)
    assert "is an axial series, not sagittal" in message and "segments sagittal" in message
    assert r"T2 \*TRA\*" in message  # header text escaped: shown as written, not as italics
    assert len(at.dataframe[0].value) == 3  # the list stays, to pick the sagittal one

    pick(at, "T2 TSE SAG")
    assert not at.error and at.session_state["volume"].dicom.info.number == 4


def test_several_dcm_files_uploaded_at_once_are_one_series(study):
    at = start()
    files = [(f"IM{k}.dcm", p.read_bytes(), "application/dicom") for k, p in enumerate(study[2])]
    at.file_uploader[0].set_value(files).run()
    assert not at.exception and not at.error, texts(at.error)
    volume = at.session_state["volume"]
    assert volume.shape == (6, 64, 64) and volume.dicom.info.number == 4
    assert len(at.dataframe[0].value) == 1


def test_dicom_files_mixed_with_a_nifti_are_refused_in_one_message(study, phantom_bytes):
    at = start()
    at.file_uploader[0].set_value([
        ("DOE_JANE_1.dcm", study[2][0].read_bytes(), "application/dicom"),
        ("scan.nii.gz", phantom_bytes, "application/gzip"),
    ]).run()  # fmt: skip
    assert not at.exception and at.session_state["volume"] is None
    (error,) = at.error
    assert "1 DICOM file(s) were uploaded together with 1 other file(s)" in error.value
    assert "DOE" not in error.value


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_the_path_box_opens_a_dicom_folder_or_zip(study, monkeypatch, tmp_path, as_zip):
    """A folder of files without extension (as PACS exports write them), or the study zip."""
    export = tmp_path / "export"
    export.mkdir()
    for k, path in enumerate(study[2]):
        (export / f"I{k:07d}").write_bytes(path.read_bytes())
    (tmp_path / "study.zip").write_bytes(study[0])
    monkeypatch.setenv("SPINE_DATA_DIR", str(tmp_path))
    at = start()
    at.text_input(key="path_text").input("study.zip" if as_zip else "export")
    next(b for b in at.button if b.label == "Open file").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert at.session_state["volume"].dicom.info.number == 4
    assert len(at.dataframe[0].value) == (3 if as_zip else 1)
    assert "Series 4: T2 TSE SAG" in texts(at.text)


def test_a_segmented_series_downloads_as_a_seg_and_a_label_map_in_its_geometry(
    model_env, study, helpers, phantom
):
    from spine.volume import load_label_map, volume_from_nifti

    at = start()
    at.file_uploader[0].upload("study.zip", study[0], "application/zip").run()
    next(b for b in at.button if b.label.startswith("Segment all")).click().run()
    assert not at.exception and not at.error, texts(at.error)
    result = at.session_state["volume_result"]
    assert result.count > 0  # the tiny model always finds something
    labels = [b.label for b in at.download_button]
    assert "Label map, volume (NIfTI)" in labels
    assert "DICOM SEG, volume (for PACS, OHIF, 3D Slicer)" in labels
    memo = at.session_state["files_memo"]  # what the download buttons serve
    key = (at.session_state["scan_id"], "volume", None)
    nifti = nib.Nifti1Image.from_bytes(gzip.decompress(memo[key]["labels"][0]))
    series = volume_from_nifti(phantom.image)  # the geometry the series was written with
    np.testing.assert_array_equal(load_label_map(nifti, series), result.labels)
    # every segment on its source image's pixels, every SEG frame at its source's position
    helpers._check_seg(memo[(*key, "seg")], study[1], result.labels, list(result.levels))
