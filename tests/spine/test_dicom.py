"""DICOM in: phantom series written as DICOM come back with their voxels and geometry,
real DICOM files (pydicom's and nibabel's test data) load or fail clearly, zips are safe."""

from __future__ import annotations

import gzip
import io
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from oracle import OracleModel  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from spine import dicom  # noqa: E402
from spine.errors import InvalidScanError, SpineInputError  # noqa: E402
from spine.phantom import make_phantom  # noqa: E402
from spine.volume import load_scan, volume_from_nifti  # noqa: E402

PATIENT = "Doe^Jane"
PATIENT_ID = "PID-31415"
SLOPE, INTERCEPT = 0.5, -10.0
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def series_datasets(
    image: nib.Nifti1Image,
    description: str = "T2 TSE SAG",
    number: int = 4,
    *,
    transpose: bool = False,
    echo_time: float = 100.0,
    axes: tuple[int, int, int] | None = None,
    modality: str = "MR",
) -> list[Dataset]:
    """A NIfTI volume -> one MR Image Storage dataset per slice of its display layout, with
    the exact geometry (LPS), stored values rescaled by SLOPE/INTERCEPT, and patient identity
    (which must never come out of spine.dicom). transpose: slices are the images' columns'
    planes of another axis (an axial or coronal series made of the same voxels); axes: the
    display axes (s, r, c) that become (slice, image row, image column), e.g. (1, 0, 2) for
    axial (= transpose) or (2, 1, 0) for coronal."""
    volume = volume_from_nifti(image)
    data = volume.data  # [S, H, W]
    canon = volume.canonical_affine  # display voxel (s, r, c) -> RAS
    if transpose:  # images are planes of constant row r (axial): (r, s, c)
        axes = (1, 0, 2)
    if axes is not None:
        data = data.transpose(axes)
        canon = canon[:, [*axes, 3]]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ canon
    row_mm, col_mm = np.linalg.norm(lps[:3, 1]), np.linalg.norm(lps[:3, 2])
    iop = [*(lps[:3, 2] / col_mm), *(lps[:3, 1] / row_mm)]  # row direction, column direction
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    out = []
    for k in range(data.shape[0]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MR_STORAGE
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MR_STORAGE, ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
            PATIENT, PATIENT_ID, "19700101", "F")  # fmt: skip
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyDate = ds.SeriesDate = "20240131"
        ds.StudyTime = ds.SeriesTime = "101500"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "A1", "", "1"
        ds.Modality, ds.Manufacturer = modality, "Phantom"
        ds.SeriesDescription, ds.SeriesNumber = description, number
        ds.InstanceNumber = data.shape[0] - k  # reversed: the reader must sort by position
        ds.ScanningSequence, ds.SequenceVariant = "SE", "SK"
        ds.EchoTime, ds.RepetitionTime = echo_time, 3000.0
        ds.ImagePositionPatient = [float(v) for v in (lps @ [k, 0, 0, 1])[:3]]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.PixelSpacing = [float(row_mm), float(col_mm)]
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 0]))
        ds.Rows, ds.Columns = data.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
        stored = np.round((data[k] - INTERCEPT) / SLOPE)
        assert stored.min() >= 0 and stored.max() < 65536
        ds.PixelData = stored.astype("<u2").tobytes()
        out.append(ds)
    return out


def write_series(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(datasets):
        path = folder / f"IM{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def assert_same_volume(volume, reference, atol_mm: float = 1e-3) -> None:
    """Same display voxels and the same display-layout affine (world mm)."""
    assert volume.shape == reference.shape
    np.testing.assert_allclose(volume.canonical_affine, reference.canonical_affine, atol=atol_mm)
    np.testing.assert_allclose(volume.data, reference.data, atol=1e-3)


@pytest.fixture(params=[0.0, 8.0], ids=["straight", "oblique"])
def phantom_series(request, tmp_path) -> tuple[nib.Nifti1Image, Path]:
    phantom = make_phantom(5, size=64, num_slices=6, oblique_deg=request.param, orientation="LPS")
    folder = tmp_path / "series"
    write_series(series_datasets(phantom.image), folder)
    return phantom.image, folder


# ----------------------------------------------------------------------------- geometry


def test_a_sagittal_series_reads_back_as_the_phantom(phantom_series):
    image, folder = phantom_series
    volume = dicom.load_dicom_series(folder)
    assert_same_volume(volume, volume_from_nifti(image))
    assert volume.orientation_known and volume.geometry_warnings == []
    assert volume.name == "series4_t2_tse_sag"


def test_the_label_map_goes_back_in_the_series_geometry(phantom_series):
    image, folder = phantom_series
    volume = dicom.load_dicom_series(folder)
    labels = np.zeros(volume.shape, np.int32)
    labels[2, 10:20, 30:40] = 3
    out = volume.labels_to_nifti(labels)
    assert out.shape == (64, 64, 6)  # columns, rows, slices: the DICOM images' layout
    reference = volume_from_nifti(image)
    np.testing.assert_array_equal(reference.load_label_map(out), labels)


def test_the_series_agrees_with_dcm2niix(phantom_series, tmp_path):
    _, folder = phantom_series
    reference = volume_from_nifti(_run_dcm2niix(folder, tmp_path / "d2n"))
    assert_same_volume(dicom.load_dicom_series(folder), reference)


def test_files_zip_and_bytes_give_the_same_volume(phantom_series):
    _, folder = phantom_series
    files = sorted(folder.iterdir())
    from_folder = dicom.load_dicom_series(folder)
    from_list = dicom.load_dicom_series(files)
    archive = zip_bytes({f"study/{p.name}": p.read_bytes() for p in files})
    from_zip = load_scan(archive, "study.zip", "ignored")
    from_uploads = dicom.load_dicom_series([p.read_bytes() for p in files])
    for other in (from_list, from_zip, from_uploads):
        assert_same_volume(other, from_folder, atol_mm=1e-9)


def test_series_info_has_no_patient_identity(phantom_series):
    _, folder = phantom_series
    (info,) = dicom.list_series(folder)
    assert (info.orientation, info.slices, info.sequence, info.date) == (
        "sagittal", 6, "T2", "2024-01-31")  # fmt: skip
    text = repr(info) + info.label
    assert PATIENT not in text and "Doe" not in text and PATIENT_ID not in text


def test_a_missing_slice_is_reported(phantom_series):
    _, folder = phantom_series
    files = sorted(folder.iterdir(), key=lambda p: pydicom.dcmread(p).InstanceNumber)
    files[2].unlink()
    with pytest.raises(dicom.DicomInputError, match="1 slice\\(s\\) are missing"):
        dicom.load_dicom_series(folder)


def test_a_duplicated_slice_is_ignored_and_said(phantom_series):
    _, folder = phantom_series
    first = sorted(folder.iterdir())[0]
    shutil.copy(first, folder / "copy.dcm")
    volume = dicom.load_dicom_series(folder)
    assert volume.num_slices == 6
    assert any("duplicate" in note for note in volume.geometry_warnings)


def test_different_images_at_one_position_are_refused(tmp_path):
    phantom = make_phantom(6, size=32, num_slices=4, oblique_deg=0)
    datasets = series_datasets(phantom.image)
    twin = series_datasets(phantom.image)[1]
    twin.SeriesInstanceUID = datasets[0].SeriesInstanceUID
    twin.PixelData = bytes(len(twin.PixelData))
    write_series([*datasets, twin], tmp_path / "s")
    with pytest.raises(dicom.DicomInputError, match="same slice position"):
        dicom.load_dicom_series(tmp_path / "s")


def test_uneven_spacing_is_refused(tmp_path):
    phantom = make_phantom(6, size=32, num_slices=5, oblique_deg=0)
    datasets = series_datasets(phantom.image)
    ipp = np.array(datasets[1].ImagePositionPatient, float)
    shift = np.array(datasets[2].ImagePositionPatient, float) - ipp
    datasets[1].ImagePositionPatient = [float(v) for v in ipp + 0.4 * shift]
    write_series(datasets, tmp_path / "s")
    with pytest.raises(dicom.DicomInputError, match="unevenly spaced"):
        dicom.load_dicom_series(tmp_path / "s")


# ----------------------------------------------------------------------------- series


def test_axial_series_are_listed_and_refused(tmp_path):
    phantom = make_phantom(7, size=32, num_slices=4, oblique_deg=0)
    write_series(series_datasets(phantom.image, "T2 TRA", 5, transpose=True), tmp_path / "ax")
    (info,) = dicom.list_series(tmp_path / "ax")
    assert info.orientation == "axial"
    with pytest.raises(dicom.NotSagittalError, match="axial"):
        dicom.load_dicom_series(tmp_path / "ax")


def test_coronal_series_are_listed_and_refused(tmp_path):
    phantom = make_phantom(7, size=32, num_slices=4, oblique_deg=0)
    write_series(series_datasets(phantom.image, "T2 COR", 6, axes=(2, 1, 0)), tmp_path / "co")
    (info,) = dicom.list_series(tmp_path / "co")
    assert (info.orientation, info.slices) == ("coronal", 32)
    with pytest.raises(dicom.NotSagittalError, match="is a coronal series, not sagittal"):
        dicom.load_dicom_series(tmp_path / "co")


def test_a_ct_series_loads_with_a_warning(tmp_path):
    """The decision for other modalities: loaded (geometry is geometry), with a warning that
    the model was trained on MR."""
    phantom = make_phantom(7, size=32, num_slices=4, oblique_deg=0)
    write_series(series_datasets(phantom.image, "SAG BONE", 3, modality="CT"), tmp_path / "ct")
    volume = dicom.load_dicom_series(tmp_path / "ct")
    assert volume.shape == (4, 32, 32) and volume.dicom.info.modality == "CT"
    assert any("is CT, not MR" in note for note in volume.geometry_warnings)


def test_a_presentation_state_has_no_images():
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"  # GSPS
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.11.1", generate_uid()
    ds.Modality, ds.SeriesInstanceUID, ds.PatientName = "PR", generate_uid(), PATIENT
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(dicom.DicomInputError, match="no images.*modality PR") as info:
        dicom.load_dicom_series(buffer.getvalue())
    assert "Doe" not in str(info.value)


def test_an_image_without_geometry_is_a_clear_error():
    """A secondary capture (pydicom's SC_rgb_small_odd.dcm): no position or orientation."""
    with pytest.raises(dicom.DicomInputError, match="so the scan has no geometry"):
        dicom.load_dicom_series(PYDICOM_DATA / "SC_rgb_small_odd.dcm")


def test_a_seg_beside_its_series_is_not_a_series(seg_case):
    """A study exported from PACS after its SEG was stored: the SEG (more frames than the
    series has slices, 'T2' in its description) is neither listed nor preselected."""
    from spine import dicom_seg

    folder, _, truth, levels = seg_case
    volume = dicom.load_dicom_series(folder)
    (folder / "seg.dcm").write_bytes(dicom_seg.segmentation_bytes(volume, truth, levels))
    (info,) = dicom.list_series(folder)
    assert (info.number, info.modality) == (4, "MR")
    assert_same_volume(dicom.load_dicom_series(folder), volume, atol_mm=1e-9)
    with pytest.raises(dicom.DicomInputError, match="no images.*modality SEG"):
        dicom.load_dicom_series(folder / "seg.dcm")


def test_the_sagittal_t2_is_preselected_among_several_series(tmp_path):
    phantom = make_phantom(8, size=32, num_slices=4, oblique_deg=0)
    write_series(series_datasets(phantom.image, "T2 TRA", 5, transpose=True), tmp_path / "a")
    write_series(series_datasets(phantom.image, "SAG T1", 2, echo_time=12.0), tmp_path / "b")
    write_series(series_datasets(phantom.image, "sag tse", 3), tmp_path / "c")  # TE 100: T2
    study = dicom.DicomStudy(tmp_path)
    assert [(i.number, i.orientation, i.sequence) for i in study.series] == [
        (2, "sagittal", "T1"), (3, "sagittal", "T2"), (5, "axial", "T2")]  # fmt: skip
    assert study.preselected.number == 3
    volume = dicom.load_dicom_series(tmp_path)
    assert volume.dicom.info.number == 3
    assert any("3 series found" in note for note in volume.geometry_warnings)
    assert dicom.load_dicom_series(tmp_path, series="2").dicom.info.sequence == "T1"
    with pytest.raises(dicom.DicomInputError, match="No series '9'"):
        dicom.load_dicom_series(tmp_path, series="9")


def test_a_single_sagittal_image_is_a_one_slice_volume(tmp_path):
    phantom = make_phantom(9, size=32, num_slices=3, oblique_deg=0)
    path = write_series(series_datasets(phantom.image)[:1], tmp_path)[0]
    volume = load_scan(path.read_bytes(), "slice.dcm")
    assert volume.shape == (1, 32, 32)
    assert any("single image" in note for note in volume.geometry_warnings)


@pytest.mark.parametrize(
    "files, message",
    [
        ({}, "empty"),
        ({"a.txt": b"hello"}, "No DICOM files found"),
    ],
)
def test_no_dicom_is_a_clear_error(files, message):
    with pytest.raises(dicom.DicomInputError, match=message):
        dicom.load_dicom_series(zip_bytes(files))


def test_an_unsupported_compression_names_the_transfer_syntax(tmp_path):
    from pydicom.encaps import encapsulate

    phantom = make_phantom(11, size=16, num_slices=3, oblique_deg=0)
    datasets = series_datasets(phantom.image)
    for ds in datasets:  # MPEG-2: no pixel-data decoder exists for it in pydicom
        ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML
        ds.PixelData = encapsulate([b"\xff\x0a" + bytes(30)])
    write_series(datasets, tmp_path / "s")
    expected = r"compressed as MPEG2 .*\(1\.2\.840\.10008\.1\.2\.4\.100\).*pip install pylibjpeg"
    with pytest.raises(dicom.DicomInputError, match=expected):
        dicom.load_dicom_series(tmp_path / "s")


def test_compressed_series_decode_with_the_installed_plugins(tmp_path):
    """JPEG 2000 lossless (pylibjpeg-openjpeg): the same voxels as uncompressed."""
    pytest.importorskip("openjpeg")
    from pydicom.uid import JPEG2000Lossless

    phantom = make_phantom(12, size=32, num_slices=3, oblique_deg=0)
    plain = write_series(series_datasets(phantom.image), tmp_path / "plain")
    folder = tmp_path / "j2k"
    folder.mkdir()
    for path in plain:
        ds = pydicom.dcmread(path)
        ds.compress(JPEG2000Lossless)
        ds.save_as(folder / path.name)
    assert_same_volume(dicom.load_dicom_series(folder), dicom.load_dicom_series(plain), 1e-9)


# ----------------------------------------------------------------------------- zip safety


def _dicom_file(tmp_path) -> bytes:
    phantom = make_phantom(10, size=16, num_slices=3, oblique_deg=0)
    return write_series(series_datasets(phantom.image)[:1], tmp_path)[0].read_bytes()


@pytest.mark.parametrize("name", ["../evil.dcm", "/abs/evil.dcm", "a/../../evil.dcm",
                                  "C:/evil.dcm", "a\\..\\..\\evil.dcm"])  # fmt: skip
def test_a_zip_with_a_path_traversal_name_is_refused(tmp_path, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    archive = zip_bytes({"ok.dcm": _dicom_file(tmp_path / "f"), name: b"x"})
    with pytest.raises(dicom.DicomInputError, match="outside the archive"):
        dicom.load_dicom_series(archive)
    assert not (tmp_path / "evil.dcm").exists() and not (tmp_path.parent / "evil.dcm").exists()


def test_a_zip_with_a_symlink_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.dcm", _dicom_file(tmp_path))
        link = zipfile.ZipInfo("link.dcm")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(dicom.DicomInputError, match="symbolic link"):
        dicom.load_dicom_series(buffer.getvalue())


def test_a_zip_with_too_many_members_is_refused(monkeypatch):
    monkeypatch.setattr(dicom.zips, "MAX_ZIP_MEMBERS", 5)
    archive = zip_bytes({f"f{k}.dcm": b"x" for k in range(6)})
    with pytest.raises(dicom.DicomInputError, match="6 files, more than the 5"):
        dicom.load_dicom_series(archive)


def test_a_zip_bomb_is_refused_before_it_is_unpacked(monkeypatch):
    monkeypatch.setattr(dicom.zips, "MAX_ZIP_BYTES", 1 << 20)
    archive = zip_bytes({"bomb.dcm": bytes(2 << 20)})  # 2 MiB of zeros: a 2 KiB zip
    assert len(archive) < 20_000
    with pytest.raises(dicom.DicomInputError, match="more than the"):
        dicom.load_dicom_series(archive)


def _stored_zip(name: str, data: bytes) -> bytearray:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(name, data)
    return bytearray(buffer.getvalue())


def test_a_corrupt_or_encrypted_zip_member_is_refused_without_its_name():
    """Member names often carry the patient's name (PACS exports foldered by patient)."""
    name = "DOE_JANE/t2/IM0001.dcm"
    corrupt = _stored_zip(name, b"A" * 1000)
    corrupt[corrupt.find(b"A" * 1000) + 10] = ord("B")  # fails its CRC-32
    encrypted = _stored_zip(name, b"A" * 1000)
    for signature, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        encrypted[encrypted.find(signature) + flags] |= 1  # general purpose flag: encrypted
    for archive, message in ((corrupt, "CRC-32"), (encrypted, "encrypted")):
        with pytest.raises(dicom.DicomInputError, match=message) as info:
            dicom.load_dicom_series(bytes(archive))
        assert "DOE" not in str(info.value) and "IM0001" not in str(info.value)


def test_a_zip_that_lies_about_its_sizes_is_refused(monkeypatch):
    monkeypatch.setattr(dicom.zips, "MAX_ZIP_BYTES", 1 << 20)
    archive = bytearray(zip_bytes({"bomb.dcm": bytes(2 << 20)}))
    size = (2 << 20).to_bytes(4, "little")
    small = (100).to_bytes(4, "little")
    for at in [i for i in range(len(archive) - 3) if archive[i : i + 4] == size]:
        archive[at : at + 4] = small  # the local and central headers declare 100 bytes
    with pytest.raises(SpineInputError):
        dicom.load_dicom_series(bytes(archive))


# ----------------------------------------------------------------------------- real files


PYDICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"  # never downloaded


def _pydicom_files() -> list[Path]:
    return sorted(PYDICOM_DATA.glob("*.dcm"))


def _nibabel_files() -> list[Path]:
    folder = Path(nib.__file__).parent / "nicom" / "tests" / "data"
    return sorted(p for p in folder.glob("*.dcm*")) if folder.is_dir() else []


def _read_real(path: Path):
    raw = path.read_bytes()
    raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
    return dicom.load_dicom_series(raw)


@pytest.mark.parametrize("path", _pydicom_files() + _nibabel_files(), ids=lambda p: p.name)
def test_real_dicom_files_load_or_fail_clearly(path):
    """Every file shipped with pydicom and nibabel: a Volume or one SpineInputError."""
    try:
        volume = _read_real(path)
    except SpineInputError as exc:
        message = str(exc)
        assert message.endswith(".") or message[-1].isalnum() or message[-1] in ")'"
        assert "Traceback" not in message
        return
    assert volume.data.ndim == 3 and np.isfinite(volume.data).all()


def test_pydicom_mr_small_loads_as_one_axial_image_refused():
    with pytest.raises(dicom.NotSagittalError, match="axial"):
        dicom.load_dicom_series(PYDICOM_DATA / "MR_small.dcm")


def test_a_structured_report_has_no_images():
    with pytest.raises(dicom.DicomInputError, match="no images"):
        dicom.load_dicom_series(PYDICOM_DATA / "test-SR.dcm")


def _dcm2niix() -> str:
    exe = shutil.which("dcm2niix") or str(Path(sys.executable).with_name("dcm2niix"))
    if not Path(exe).exists():
        pytest.skip("dcm2niix is not installed (pip install dcm2niix)")
    return exe


def _run_dcm2niix(folder: Path, out: Path) -> nib.Nifti1Image:
    out.mkdir()
    run = subprocess.run(
        # -p n: Philips display values (RescaleSlope/Intercept), not its private float scale
        [_dcm2niix(), "-z", "n", "-b", "n", "-p", "n", "-f", "scan", "-o", str(out), str(folder)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return nib.load(out / "scan.nii")


PHILIPS = Path(nib.__file__).parent / "nicom" / "tests" / "data" / "philips_mprage.dcm.gz"


def test_the_enhanced_multiframe_philips_file_is_listed_as_one_series():
    if not PHILIPS.exists():
        pytest.skip("nibabel's test data are not installed")
    (info,) = dicom.list_series(gzip.decompress(PHILIPS.read_bytes()))
    assert (info.multiframe, info.slices, info.orientation) == (True, 176, "sagittal")
    with pytest.raises(InvalidScanError, match="constant"):  # its pixels were blanked
        _read_real(PHILIPS)


def test_the_enhanced_multiframe_file_agrees_with_dcm2niix(tmp_path):
    """nibabel's Philips file has blank pixels: give it a ramp, then read it as dcm2niix."""
    if not PHILIPS.exists():
        pytest.skip("nibabel's test data are not installed")
    ds = pydicom.dcmread(io.BytesIO(gzip.decompress(PHILIPS.read_bytes())))
    frames, rows, cols = int(ds.NumberOfFrames), ds.Rows, ds.Columns
    ramp = (np.arange(frames * rows * cols) % 4093).astype("<u2")
    ds.PixelData = ramp.tobytes()
    (tmp_path / "mf").mkdir()
    ds.save_as(tmp_path / "mf" / "mf.dcm")
    volume = dicom.load_dicom_series(tmp_path / "mf")
    assert volume.dicom.info.multiframe and volume.shape == (176, 256, 256)
    reference = volume_from_nifti(_run_dcm2niix(tmp_path / "mf", tmp_path / "out"))
    assert_same_volume(volume, reference)


def test_errors_are_spine_input_errors():
    assert issubclass(dicom.NotSagittalError, InvalidScanError)
    assert issubclass(dicom.DicomInputError, SpineInputError)


# ----------------------------------------------------------------------------- DICOM SEG


@pytest.fixture
def seg_case(tmp_path):
    """A sagittal oblique phantom series on disk, its datasets, and its true label map."""
    phantom = make_phantom(5, size=64, num_slices=6, oblique_deg=8.0, orientation="LPS")
    datasets = series_datasets(phantom.image)
    write_series(datasets, tmp_path / "series")
    truth = volume_from_nifti(phantom.image).load_label_map(phantom.labels)
    return tmp_path / "series", datasets, truth, phantom.levels


def _check_seg(raw: bytes, datasets: list[Dataset], truth: np.ndarray, levels: list[str]):
    """Every segment, read back with highdicom, covers exactly its body's pixels on each
    source image (dataset k holds display slice k: row r, column c = voxel [k, r, c])."""
    hd = pytest.importorskip("highdicom")
    seg = hd.seg.segread(io.BytesIO(raw))
    labels = [item.SegmentLabel for item in seg.SegmentSequence]
    assert labels == [f"{level} vertebral body" for level in levels]
    assert seg.PatientName == PATIENT  # the patient module must match the source's
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == datasets[0].SeriesInstanceUID
    uids = [ds.SOPInstanceUID for ds in datasets]
    present = [k for k in range(len(datasets)) if truth[k].any()]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[uids[k] for k in present],
        segment_numbers=list(range(1, len(levels) + 1)),
    )  # [instances, rows, columns, segments]
    for n, k in enumerate(present):
        for j in range(len(levels)):
            np.testing.assert_array_equal(pixels[n, ..., j] > 0, truth[k] == j + 1)
    # each SEG frame lies where the source image it references lies, in the same plane
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    shared = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    np.testing.assert_allclose(
        shared.ImageOrientationPatient, datasets[0].ImageOrientationPatient, atol=1e-6
    )
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(position, by_uid[uid].ImagePositionPatient, atol=1e-3)


def test_the_dicom_seg_puts_every_body_on_its_source_pixels(seg_case):
    from spine import dicom_seg

    folder, datasets, truth, levels = seg_case
    volume = dicom.load_dicom_series(folder)
    raw = dicom_seg.segmentation_bytes(volume, truth, levels, "test")
    _check_seg(raw, datasets, truth, levels)


def test_a_seg_needs_a_dicom_scan(seg_case):
    from spine import dicom_seg

    folder, _, truth, levels = seg_case
    volume = dicom.load_dicom_series(folder)
    volume.dicom = None
    with pytest.raises(SpineInputError, match="read from DICOM"):
        dicom_seg.segmentation_bytes(volume, truth, levels)


@pytest.mark.parametrize("kind", ["folder", "zip", "bare_files"])
def test_spine_segment_takes_a_dicom_input_and_writes_a_seg(seg_case, tmp_path, kind,
                                                           monkeypatch, capsys):  # fmt: skip
    """A folder of .dcm files, a zip of them, or a folder of DICOM files without extension."""
    import json

    from spine import pipeline, segment

    folder, datasets, truth, levels = seg_case
    volume = dicom.load_dicom_series(folder)
    segmenter = pipeline.Segmenter(OracleModel([(volume, truth)]), config=None)
    monkeypatch.setattr(pipeline, "load_segmenter", lambda weights=None, config=None: segmenter)
    source = folder
    if kind == "zip":
        source = tmp_path / "study.zip"
        source.write_bytes(zip_bytes({f"s/{p.name}": p.read_bytes() for p in folder.iterdir()}))
    elif kind == "bare_files":  # as many PACS exports and CD-ROMs write them
        source = tmp_path / "export"
        source.mkdir()
        for k, path in enumerate(sorted(folder.iterdir())):
            (source / f"I{k:07d}").write_bytes(path.read_bytes())
    out = tmp_path / "out"
    assert segment.main([str(source), "--out", str(out), "--lowest", levels[-1]]) == 0
    result = out / source.name.removesuffix(".zip")
    name = "series4_t2_tse_sag"
    written = nib.load(result / f"{name}_vertebrae.nii.gz")
    np.testing.assert_array_equal(volume.load_label_map(written), truth)
    _check_seg((result / f"{name}_seg.dcm").read_bytes(), datasets, truth, levels)
    manifest = (result / "manifest.json").read_text()
    assert json.loads(manifest)["dicom_series"]["series_number"] == 4
    for text in (manifest, (result / f"{name}_measurements.csv").read_text(),
                 (result / f"{name}_via.json").read_text(), capsys.readouterr().err):  # fmt: skip
        assert "Doe" not in text and PATIENT_ID not in text
    assert not any("Doe" in p.name for p in result.rglob("*"))


def test_a_seg_of_an_enhanced_multiframe_series_lands_on_its_frames(tmp_path):
    """Label the voxels whose stored value is a multiple of 7: in the SEG, frame f must
    cover exactly the pixels of source frame f with such values."""
    hd = pytest.importorskip("highdicom")
    from spine import dicom_seg

    if not PHILIPS.exists():
        pytest.skip("nibabel's test data are not installed")
    ds = pydicom.dcmread(io.BytesIO(gzip.decompress(PHILIPS.read_bytes())))
    frames, rows, cols = int(ds.NumberOfFrames), ds.Rows, ds.Columns
    stored = ((np.arange(frames * rows * cols) * 7919) % 4093).astype("<u2")
    ds.PixelData = stored.tobytes()
    (tmp_path / "mf").mkdir()
    ds.save_as(tmp_path / "mf" / "mf.dcm")
    volume = dicom.load_dicom_series(tmp_path / "mf")
    slope = float(ds.PerFrameFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
                  .RescaleSlope)  # fmt: skip
    labels = (np.round(volume.data / slope).astype(np.int64) % 7 == 0).astype(np.int32)
    seg = hd.seg.segread(io.BytesIO(dicom_seg.segmentation_bytes(volume, labels, ["L3"])))
    got = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=ds.SOPInstanceUID,
        source_frame_numbers=list(range(1, frames + 1)),
        segment_numbers=[1],
    )[..., 0]
    np.testing.assert_array_equal(got > 0, stored.reshape(frames, rows, cols) % 7 == 0)
