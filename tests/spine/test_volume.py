"""spine.volume: NIfTI reading/checks, display layout, label export, windowing, square frame."""

from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as nio

from spine.errors import InvalidScanError, SpineInputError
from spine.volume import (
    export_slices,
    label_instances,
    labelled_slices,
    load_label_map,
    load_volume,
    nifti_bytes,
    save_image,
    save_nifti,
    slice_channels,
    volume_from_nifti,
    window_level,
    window_percentile,
)


def display_volume(shape=(5, 12, 10)) -> np.ndarray:
    """A display-layout [S, H, W] array whose every voxel value is unique."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1


def in_orientation(data: np.ndarray, codes: str, spacing=(4.0, 1.0, 0.8)) -> nib.Nifti1Image:
    """Store display-layout data in the voxel order `codes` with a matching affine."""
    s, h, w = data.shape
    canon = np.array(
        [[spacing[0], 0, 0, -10], [0, 0, -spacing[2], 30], [0, -spacing[1], 0, 50], [0, 0, 0, 1]]
    )
    ornt = nio.ornt_transform(nio.axcodes2ornt(("R", "I", "P")), nio.axcodes2ornt(tuple(codes)))
    affine = canon @ nio.inv_ornt_aff(ornt, data.shape)
    return nib.Nifti1Image(np.ascontiguousarray(nio.apply_orientation(data, ornt)), affine)


def raw_bytes(img: nib.Nifti1Image) -> bytes:
    return img.to_bytes()


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PIR", "ASL", "IRP", "SPL"])
def test_any_orientation_loads_into_the_same_display_layout(codes):
    data = display_volume()
    vol = load_volume(raw_bytes(in_orientation(data, codes)))
    assert vol.orientation == codes
    np.testing.assert_array_equal(vol.data, data)
    assert vol.spacing == pytest.approx((4.0, 1.0, 0.8))


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PIR", "AIL"])
def test_labels_to_nifti_is_the_exact_inverse_read_back_by_simpleitk(tmp_path, codes):
    import SimpleITK as sitk

    img = in_orientation(display_volume(), codes)
    vol = volume_from_nifti(img)
    labels = (np.arange(vol.data.size).reshape(vol.data.shape) % 7).astype(np.int32)
    out = vol.labels_to_nifti(labels)
    path = save_nifti(out, tmp_path / "labels.nii.gz")
    back = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(back).transpose(2, 1, 0)  # sitk is z, y, x
    np.testing.assert_array_equal(arr, vol.to_original(labels))
    assert np.issubdtype(arr.dtype, np.integer)
    # SimpleITK is LPS: direction/origin must match the input affine with x, y negated.
    lps = np.diag([-1, -1, 1]) @ img.affine[:3, :3]
    spacing = np.array(back.GetSpacing())
    direction = np.array(back.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction * spacing, lps, atol=1e-5)
    np.testing.assert_allclose(
        back.GetOrigin(), np.diag([-1, -1, 1]) @ img.affine[:3, 3], atol=1e-4
    )


def test_labels_round_trip_through_load_label_map():
    vol = volume_from_nifti(in_orientation(display_volume(), "LPS"))
    labels = np.zeros(vol.data.shape, np.int32)
    labels[1:3, 2:6, 3:7] = 1
    labels[2:4, 7:10, 2:5] = 2
    out = vol.labels_to_nifti(labels)
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, vol.affine)
    assert out.shape == vol.original_shape
    np.testing.assert_array_equal(load_label_map(nifti_bytes(out), like=vol), labels)


def test_label_map_in_another_voxel_order_with_the_same_geometry_is_accepted():
    data = display_volume()
    vol = volume_from_nifti(in_orientation(data, "PIR"))
    labels = (data % 3).astype(np.uint8)
    other = in_orientation(labels, "RAS")
    np.testing.assert_array_equal(load_label_map(other, like=vol), labels)


def test_label_map_with_other_geometry_is_rejected():
    vol = volume_from_nifti(in_orientation(display_volume(), "PIR"))
    wrong_shape = in_orientation(np.zeros((5, 12, 9), np.uint8), "PIR")
    with pytest.raises(InvalidScanError, match="shape"):
        load_label_map(wrong_shape, like=vol)
    moved = in_orientation(np.zeros((5, 12, 10), np.uint8), "PIR", spacing=(4.0, 1.0, 0.9))
    with pytest.raises(InvalidScanError, match="affine"):
        load_label_map(moved, like=vol)


def test_gzip_and_plain_bytes_and_paths_load_alike(tmp_path):
    img = in_orientation(display_volume(), "LPS")
    raw = raw_bytes(img)
    (tmp_path / "a.nii").write_bytes(raw)
    (tmp_path / "b.nii.gz").write_bytes(gzip.compress(raw))
    for source in (raw, gzip.compress(raw), tmp_path / "a.nii", str(tmp_path / "b.nii.gz")):
        np.testing.assert_array_equal(load_volume(source).data, display_volume())
    assert load_volume(tmp_path / "b.nii.gz").name == "b"
    assert load_volume(raw, name="upload1").name == "upload1"


def test_gzipped_bytes_in_a_file_named_nii_are_detected_by_magic(tmp_path):
    path = tmp_path / "scan.nii"
    path.write_bytes(gzip.compress(raw_bytes(in_orientation(display_volume(), "RAS"))))
    assert load_volume(path).shape == (5, 12, 10)


def test_not_nifti_is_rejected_with_advice():
    with pytest.raises(InvalidScanError, match="not NIfTI"):
        load_volume(b"hello world, this is not a scan" * 20)


def test_truncated_gzip_is_rejected():
    blob = gzip.compress(raw_bytes(in_orientation(display_volume(), "RAS")))
    with pytest.raises(InvalidScanError, match="truncated"):
        load_volume(blob[: len(blob) // 2])


def test_truncated_plain_nifti_is_rejected():
    raw = raw_bytes(in_orientation(display_volume(), "RAS"))
    with pytest.raises(InvalidScanError, match="truncated"):
        load_volume(raw[:-50])


def test_2d_data_is_rejected():
    img = nib.Nifti1Image(np.random.default_rng(0).random((20, 30)).astype(np.float32), np.eye(4))
    with pytest.raises(InvalidScanError, match="2D"):
        load_volume(raw_bytes(img))


def test_4d_data_uses_the_first_volume_with_a_warning():
    data = np.random.default_rng(0).random((6, 7, 5, 3)).astype(np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    with pytest.warns(UserWarning, match="first 3D volume"):
        vol = load_volume(raw_bytes(img))
    assert vol.original_shape == (6, 7, 5)
    np.testing.assert_array_equal(vol.to_original(vol.data), data[..., 0])


def test_some_nan_voxels_are_replaced_with_a_warning_all_nan_is_rejected():
    data = display_volume()
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    with pytest.warns(UserWarning, match="NaN/inf"):
        vol = load_volume(raw_bytes(in_orientation(data, "RAS")))
    assert np.isfinite(vol.data).all()
    assert vol.data[0, 0, 0] == 1.0 + 3  # the smallest finite value
    with pytest.raises(InvalidScanError, match="NaN"):
        load_volume(raw_bytes(in_orientation(np.full((4, 5, 6), np.nan, np.float32), "RAS")))


def test_constant_image_is_rejected():
    with pytest.raises(InvalidScanError, match="constant"):
        load_volume(raw_bytes(in_orientation(np.full((4, 5, 6), 7.0, np.float32), "RAS")))


def test_absurd_size_is_rejected_from_the_header_alone():
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1024, 1024, 1024))
    hdr.set_data_dtype(np.uint8)
    raw = hdr.binaryblock + b"\0" * 4 + b"\0" * 1000  # no need for the (huge) data
    with pytest.raises(InvalidScanError, match="too large"):
        load_volume(raw)


def test_wrong_extension_and_missing_file_are_rejected(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(InvalidScanError, match=r"\.nii"):
        load_volume(path)
    with pytest.raises(InvalidScanError, match="No such file"):
        load_volume(tmp_path / "missing.nii.gz")


def test_errors_are_spine_input_errors():
    assert issubclass(InvalidScanError, SpineInputError)
    with pytest.raises(SpineInputError):
        load_volume(b"")


def nibabel_test_files() -> list[Path]:
    from nibabel.testing import data_path

    return sorted(p for p in Path(data_path).iterdir() if p.name.endswith((".nii", ".nii.gz")))


@pytest.mark.parametrize("path", nibabel_test_files(), ids=lambda p: p.name)
def test_nibabel_sample_files_load_or_fail_clearly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            vol = load_volume(path)
        except InvalidScanError as exc:
            assert ". " in str(exc)  # what is wrong. what to do
            return
    assert vol.data.ndim == 3 and vol.data.dtype == np.float32
    assert all(s > 0 for s in vol.spacing)


def test_window_percentile_and_level():
    image = np.linspace(0, 100, 1001, dtype=np.float32)
    out = window_percentile(image, 10, 90)
    assert out.dtype == np.uint8 and out[0] == 0 and out[-1] == 255
    assert out[500] == 128
    lv = window_level(np.array([0.0, 50.0, 100.0]), window=100, level=50)
    np.testing.assert_array_equal(lv, [0, 128, 255])
    assert window_percentile(np.full((4, 4), 3.0)).max() == 0


def test_export_slices_and_save_image(tmp_path):
    vol = volume_from_nifti(in_orientation(display_volume(), "RAS"), name="vol")
    paths = export_slices(vol, tmp_path, fmt="png", indices=[0, 4])
    assert [p.name for p in paths] == ["vol_s000.png", "vol_s004.png"]
    from PIL import Image

    assert np.asarray(Image.open(paths[0])).shape == (12, 10)
    jpg = save_image(np.zeros((8, 8, 3), np.uint8), tmp_path / "x.jpg")
    assert jpg.read_bytes()[:2] == b"\xff\xd8"
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_label_helpers():
    labels = np.zeros((3, 6, 6), np.int32)
    labels[1, :3, :3] = 2
    labels[1, 4:, 4:] = 1
    labels[2, 0, 0] = 1
    masks, values = label_instances(labels[1])
    assert masks.shape == (6, 6, 2) and masks[..., 0].sum() == 4 and masks[..., 1].sum() == 9
    assert values.tolist() == [1, 2]
    assert label_instances(labels[1], min_area=5)[1].tolist() == [2]
    assert labelled_slices(labels) == [1, 2]
    assert labelled_slices(labels, min_area=2) == [1]
    assert labelled_slices(labels, min_area=2, empty_slices=1) == [0, 1]


def test_nifti2_scan_gets_a_nifti1_label_map_with_the_same_geometry():
    data = display_volume()
    img1 = in_orientation(data, "LPS")
    img2 = nib.Nifti2Image(np.asanyarray(img1.dataobj), img1.affine)
    vol = load_volume(img2.to_bytes())
    np.testing.assert_array_equal(vol.data, data)
    labels = (data % 4).astype(np.int32)
    out = vol.labels_to_nifti(labels)
    assert isinstance(out, nib.Nifti1Image) and out.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(vol.from_labels_nifti(out), labels)


def nifti2_with_dims(dims: tuple[int, ...]) -> bytes:
    """A small valid NIfTI-2 file whose header then claims dims (dim[0] = len(dims))."""
    raw = bytearray(nib.Nifti2Image(np.zeros((2, 2, 2), np.int16), np.eye(4)).to_bytes())
    fields = [len(dims), *dims] + [1] * (7 - len(dims))
    raw[16:80] = struct.pack("<8q", *fields)  # NIfTI-2 dim[8] is int64 at offset 16
    return bytes(raw)


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ((2**40, 2**40, 2**40), "too large"),  # product is 0 mod 2^64
        ((2**62, 4, 1), "too large"),
        ((2, 2, 2, 2**62), "describe .* MiB of voxels"),  # a 4th dimension wraps the total
        ((2, -5, 2), "negative dimension"),
    ],
)
def test_nifti2_dimensions_whose_product_overflows_are_one_clear_error(dims, message):
    with pytest.raises(InvalidScanError, match=message):
        load_volume(nifti2_with_dims(dims))


def test_decompressed_size_is_capped(monkeypatch):
    import spine.volume as volume_module

    blob = gzip.compress(raw_bytes(in_orientation(display_volume(), "RAS")))
    monkeypatch.setattr(volume_module, "MAX_DECOMPRESSED_BYTES", 400)
    with pytest.raises(InvalidScanError, match="more than"):
        load_volume(blob)


def test_slice_channels_put_the_neighbours_in_red_and_blue():
    stack = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(4, 2, 3)  # [S, H, W]
    plain = slice_channels(stack, 2)
    assert plain.shape == (2, 3, 3) and plain.dtype == np.uint8
    assert all((plain[..., c] == stack[2]).all() for c in range(3))
    middle = slice_channels(stack, 2, neighbours=True)
    np.testing.assert_array_equal(np.moveaxis(middle, -1, 0), stack[1:4])
    first, last = slice_channels(stack, 0, True), slice_channels(stack, 3, True)
    np.testing.assert_array_equal(np.moveaxis(first, -1, 0), stack[[0, 0, 1]])  # edge replicated
    np.testing.assert_array_equal(np.moveaxis(last, -1, 0), stack[[2, 3, 3]])
