"""The real page in headless Chromium: upload a scan, segment it, download the label map.

Runs `streamlit run app.py` with the tiny untrained model (see tests/app/conftest.py):
this checks that the page works end to end in a browser, not how accurate the model is.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spine.phantom import make_phantom
from spine.pipeline import DEFAULT_WEIGHTS
from spine.volume import load_label_map, save_nifti, volume_from_nifti

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    phantom = make_phantom(5, size=96, num_slices=6, orientation="PIR")
    path = tmp_path_factory.mktemp("upload") / "browser_phantom.nii.gz"
    save_nifti(phantom.image, path)
    return path, phantom.image.affine


def test_upload_segment_and_download_the_label_maps(page, app_url, scan):
    path, affine = scan
    page.goto(app_url)
    page.get_by_role("button", name="Try an example scan").wait_for()

    page.locator('input[type="file"]').set_input_files(str(path))
    page.get_by_text("6 sagittal slices of 96 × 96 px").wait_for()

    page.get_by_role("button", name="Segment this slice").click()
    download_button = page.get_by_role("button", name=re.compile(r"Label map, slice \d+"))
    download_button.wait_for()
    overlay = page.locator('[data-testid="stImage"] img').first
    overlay.wait_for()
    assert page.evaluate("(img) => img.naturalWidth", overlay.element_handle()) >= 640
    assert page.get_by_text("Something went wrong").count() == 0

    with page.expect_download() as info:
        download_button.click()
    download = info.value
    assert download.suggested_filename.endswith("_vertebrae.nii.gz")
    labels = nib.Nifti1Image.from_bytes(gzip.decompress(Path(download.path()).read_bytes()))
    np.testing.assert_allclose(labels.affine, affine, atol=1e-4)
    assert labels.shape == nib.load(path).shape

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "segmented_slice.png"), full_page=True)

    page.get_by_role("button", name="Segment all 6 slices").click()
    volume_button = page.get_by_role("button", name="Label map, volume (NIfTI)")
    volume_button.wait_for()
    with page.expect_download() as info:
        volume_button.click()
    labels = nib.Nifti1Image.from_bytes(gzip.decompress(Path(info.value.path()).read_bytes()))
    np.testing.assert_allclose(labels.affine, affine, atol=1e-4)
    assert labels.shape == nib.load(path).shape
    page.screenshot(path=str(ARTIFACTS / "segmented_volume.png"), full_page=True)


def test_bad_upload_shows_an_error_in_the_browser(page, app_url, tmp_path):
    bad = tmp_path / "not_a_scan.nii.gz"
    bad.write_bytes(b"hello, I am not a scan")
    page.goto(app_url)
    page.get_by_role("button", name="Try an example scan").wait_for()
    page.locator('input[type="file"]').set_input_files(str(bad))
    alert = page.locator('[data-testid="stAlertContentError"]').filter(has_text="NIfTI")
    alert.wait_for()
    assert "Traceback" not in alert.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "bad_upload.png"), full_page=True)


@pytest.fixture(scope="module")
def dicom_study(tmp_path_factory):
    """A zipped study written from a phantom: a sagittal T2 series (4) and an axial one (5),
    in a folder named after the patient; with the T2 datasets and the helpers that wrote it
    (tests/spine/test_dicom.py)."""
    pytest.importorskip("pydicom")
    path = Path(__file__).resolve().parents[1] / "spine" / "test_dicom.py"
    spec = importlib.util.spec_from_file_location("spine_test_dicom_e2e", path)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    phantom = make_phantom(5, size=96, num_slices=6, oblique_deg=8.0, orientation="LPS")
    folder = tmp_path_factory.mktemp("dicom")
    t2 = helpers.series_datasets(phantom.image)
    axial = helpers.series_datasets(phantom.image, "T2 TRA", 5, transpose=True)
    files = helpers.write_series(t2, folder / "t2") + helpers.write_series(axial, folder / "ax")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in files:
            archive.writestr(f"DOE_JANE/{file.parent.name}/{file.name}", file.read_bytes())
    (folder / "DOE_JANE.zip").write_bytes(buffer.getvalue())
    return folder / "DOE_JANE.zip", phantom, t2, helpers


def test_a_zipped_dicom_series_downloads_as_seg_and_label_map_in_its_geometry(
    page, app_url, dicom_study
):
    zip_path, phantom, datasets, helpers = dicom_study
    page.goto(app_url)
    page.get_by_role("button", name="Try an example scan").wait_for()
    page.locator('input[type="file"]').set_input_files(str(zip_path))
    page.get_by_text("DICOM Series 4: T2 TSE SAG").wait_for()  # preselected over the axial
    page.get_by_text("2 DICOM series found").wait_for()
    main = page.locator('[data-testid="stMain"]')  # the uploader itself shows the file name
    assert "DOE" not in main.inner_text() and "Doe" not in main.inner_text()

    page.get_by_role("button", name="Segment all 6 slices").click()
    nifti_button = page.get_by_role("button", name="Label map, volume (NIfTI)")
    nifti_button.wait_for()
    with page.expect_download() as info:
        nifti_button.click()
    nifti = nib.Nifti1Image.from_bytes(gzip.decompress(Path(info.value.path()).read_bytes()))
    labels = load_label_map(nifti, volume_from_nifti(phantom.image))  # refuses other grids
    assert labels.max() > 0  # the tiny model always finds something

    with page.expect_download() as info:
        page.get_by_role("button", name="DICOM SEG, volume (for PACS, OHIF, 3D Slicer)").click()
    assert info.value.suggested_filename == "series4_t2_tse_sag_seg.dcm"
    raw = Path(info.value.path()).read_bytes()
    hd = pytest.importorskip("highdicom")
    segments = hd.seg.segread(io.BytesIO(raw)).SegmentSequence
    levels = [item.SegmentLabel.removesuffix(" vertebral body") for item in segments]
    assert len(levels) == labels.max()
    # each segment on the voxels of its body in the label map, on the source images'
    # pixels, each SEG frame at the position of the source image it references
    helpers._check_seg(raw, datasets, labels, levels)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dicom_segmented.png"), full_page=True)


@pytest.mark.skipif(
    not os.environ.get("SPINESEG_README_SCREENSHOT"),
    reason="opt-in: SPINESEG_README_SCREENSHOT=1 refreshes docs/screenshot.png",
)
def test_readme_screenshot(start_app, page, tmp_path):
    """docs/screenshot.png: the example scan with the bundled model (if installed) over it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINESEG_")}
    with start_app(env, tmp_path / "server.log") as url:
        page.goto(url)
        page.get_by_role("button", name="Try an example scan").click()
        page.get_by_text("sagittal slices of").wait_for()
        if DEFAULT_WEIGHTS.is_file():
            page.get_by_role("button", name=re.compile(r"Segment all \d+ slices")).click()
            page.get_by_text("Whole volume").wait_for()
        page.locator('[data-testid="stImage"] img').first.wait_for()
        page.wait_for_timeout(1500)
        docs = Path(__file__).resolve().parents[2] / "docs"
        docs.mkdir(exist_ok=True)
        page.screenshot(path=str(docs / "screenshot.png"))
