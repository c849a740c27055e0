"""spine.inputs: what the page was given (DICOM or one scan), the series choice and table,
and header text kept out of Markdown."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("pydicom")

from spine import inputs, pipeline  # noqa: E402
from spine.errors import SpineInputError  # noqa: E402
from spine.phantom import make_phantom  # noqa: E402


@pytest.fixture(scope="module")
def helpers():
    path = Path(__file__).resolve().parent / "test_dicom.py"
    spec = importlib.util.spec_from_file_location("spine_test_dicom_inputs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study_folder(helpers, tmp_path_factory):
    """Series 5 axial T2, 2 sagittal T1 and 3 sagittal T2 of one phantom, in subfolders."""
    folder = tmp_path_factory.mktemp("study")
    image = make_phantom(8, size=32, num_slices=4, oblique_deg=0).image
    helpers.write_series(helpers.series_datasets(image, "T2 TRA", 5, transpose=True), folder / "a")
    helpers.write_series(helpers.series_datasets(image, "SAG T1", 2, echo_time=12.0), folder / "b")
    helpers.write_series(helpers.series_datasets(image, "sag tse", 3), folder / "c")
    return folder


def test_dcm_files_and_zips_are_dicom_uploads(study_folder, helpers):
    files = sorted((study_folder / "c").iterdir())
    archive = helpers.zip_bytes({p.name: p.read_bytes() for p in files})
    uploads = [(p.name, p.read_bytes()) for p in files] + [("study.zip", archive)]
    assert inputs.dicom_uploads(uploads) == [data for _, data in uploads]


def test_one_nifti_or_png_is_not_a_dicom_upload():
    assert inputs.dicom_uploads([("scan.nii.gz", b"\x1f\x8b")]) is None
    assert inputs.dicom_uploads([("slice.png", b"\x89PNG")]) is None


def test_several_scans_at_once_are_refused():
    with pytest.raises(SpineInputError, match="2 scans were uploaded at once"):
        inputs.dicom_uploads([("a.nii.gz", b"\x1f\x8b"), ("b.nii", b"\x00")])


def test_dicom_mixed_with_a_scan_is_refused_without_naming_files(study_folder):
    dcm = next((study_folder / "c").iterdir()).read_bytes()
    with pytest.raises(SpineInputError, match="together with 1 other") as info:
        inputs.dicom_uploads([("DOE_JANE.dcm", dcm), ("scan.nii.gz", b"\x1f\x8b")])
    assert "DOE" not in str(info.value)


def test_the_choice_preselects_the_sagittal_t2(study_folder):
    study = inputs.read_study(study_folder)
    keys, index = inputs.series_choice(study)
    assert [info.number for info in study.series] == [2, 3, 5]
    assert keys == [info.key for info in study.series] and index == 1


def test_without_a_sagittal_series_nothing_is_preselected(study_folder, helpers, tmp_path):
    keys, index = inputs.series_choice(inputs.read_study(study_folder / "a"))
    assert len(keys) == 1 and index == 0  # the only series: shown, refused when loaded
    image = make_phantom(8, size=32, num_slices=4, oblique_deg=0).image
    helpers.write_series(helpers.series_datasets(image, "T1 TRA", 6, transpose=True), tmp_path)
    keys, index = inputs.series_choice(inputs.read_study([study_folder / "a", tmp_path]))
    assert len(keys) == 2 and index is None


def test_the_table_says_what_can_be_segmented(study_folder):
    rows = inputs.series_rows(inputs.read_study(study_folder))
    assert set(rows[0]) == set(inputs.SERIES_COLUMNS)
    assert [(r["series"], r["orientation"], r["sequence"], r["segment"]) for r in rows] == [
        (2, "sagittal", "T1", "yes"), (3, "sagittal", "T2", "yes"), (5, "axial", "T2", "no: axial")
    ]  # fmt: skip
    import pydicom

    row_mm, col_mm = pydicom.dcmread(next((study_folder / "c").iterdir())).PixelSpacing
    assert rows[1]["pixel_mm"] == f"{row_mm:.2g} x {col_mm:.2g}" and rows[1]["slices"] == 4


def test_a_dicom_folder_without_extensions_is_a_dicom_path(study_folder, tmp_path):
    bare = tmp_path / "export"
    bare.mkdir()
    for k, path in enumerate(sorted((study_folder / "c").iterdir())):
        (bare / f"I{k}").write_bytes(path.read_bytes())
    assert inputs.is_dicom_path(bare) and inputs.is_dicom_path(bare / "I0")
    (tmp_path / "scan.nii.gz").write_bytes(b"\x1f\x8b")
    assert not inputs.is_dicom_path(tmp_path / "scan.nii.gz")
    assert inputs.read_study(bare).series[0].number == 3


def test_a_data_folder_path_may_be_a_folder_only_when_asked(tmp_path):
    (tmp_path / "study").mkdir()
    assert pipeline.resolve_data_path("study", tmp_path, folders=True) == tmp_path / "study"
    with pytest.raises(SpineInputError, match="No such file in the data folder"):
        pipeline.resolve_data_path("study", tmp_path)
    with pytest.raises(SpineInputError, match="outside the data folder"):
        pipeline.resolve_data_path("..", tmp_path / "study", folders=True)


@pytest.mark.parametrize(
    "text, shown",
    [
        ("T2 *TSE* _sag_", r"T2 \*TSE\* \_sag\_"),
        ("[link](x) <b> `c` $x$ ~~s~~ a|b", r"\[link\](x) \<b\> \`c\` \$x\$ \~\~s\~\~ a\|b"),
        (":red[T2] 10:30", r"\:red\[T2\] 10\:30"),
        ("1. list\n- item\n# head", "1\\. list\n\\- item\n\\# head"),
        ("Series 4: T2 TSE SAG (sagittal, 6 slices)", "Series 4: T2 TSE SAG (sagittal, 6 slices)"),
    ],
)
def test_header_text_is_escaped_for_markdown(text, shown):
    assert inputs.plain(text) == shown
