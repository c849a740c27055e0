"""spine.volume geometry checks: unknown orientation, bad voxel sizes, non-sagittal scans and
the qform/sform codes of written label maps. The bad files are made here with nibabel."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as nio

from spine.errors import InvalidScanError, SpineInputError
from spine.phantom import make_phantom
from spine.volume import (
    NO_ORIENTATION_WARNING,
    Volume,
    check_sagittal,
    load_label_map,
    load_volume,
    nifti_bytes,
    sagittal_problem,
    volume_from_image,
    volume_from_nifti,
)

REAL = Path(__file__).parents[2].parent / "shared" / "data" / "real"


def random_data(shape) -> np.ndarray:
    return np.random.default_rng(0).random(shape).astype(np.float32) * 100


def without_orientation(shape=(5, 12, 10), pixdim=(4.0, 1.0, 0.8), qform_code=0) -> bytes:
    """NIfTI bytes with qform/sform codes 0 (or only a qform) and pixdim exactly as given."""
    img = nib.Nifti1Image(random_data(shape), None)
    if qform_code:
        img.header.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=qform_code)
    img.header["pixdim"][1:4] = pixdim
    assert int(img.header["sform_code"]) == 0
    return img.to_bytes()


def with_affine(shape, columns, qform_code=1, sform_code=1) -> bytes:
    """NIfTI bytes whose voxel axes are the given world vectors (mm), codes as given."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(columns, dtype=np.float64).T  # row k of columns -> voxel axis k
    img = nib.Nifti1Image(random_data(shape), affine)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    return img.to_bytes()


def codes(img: nib.Nifti1Image) -> tuple[int, int]:
    return int(img.header["qform_code"]), int(img.header["sform_code"])


def reread(img: nib.Nifti1Image) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(nifti_bytes(img)))


# ----------------------------------------------------------------------------- orientation


def test_scan_without_orientation_is_flagged_on_the_volume():
    with pytest.warns(UserWarning, match="no orientation"):
        vol = load_volume(without_orientation(), name="bare")
    assert vol.orientation_known is False
    assert vol.geometry_warnings == [NO_ORIENTATION_WARNING]
    # nibabel's guess for voxel axes 0, 1, 2 is L, A, S: rows are voxel axis 2
    assert vol.spacing == pytest.approx((4.0, 0.8, 1.0))


def test_scan_with_orientation_has_no_geometry_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = load_volume(with_affine((5, 12, 10), np.diag([4.0, 1.0, 0.8])))
    assert vol.orientation_known is True and vol.geometry_warnings == []
    # only a qform counts as an orientation too
    vol = load_volume(with_affine((5, 12, 10), np.diag([4.0, 1.0, 0.8]), 1, 0))
    assert vol.orientation_known is True and vol.geometry_warnings == []


def test_volume_defaults_keep_old_constructors_working():
    vol = Volume(np.zeros((1, 2, 2), np.float32), (1.0, 1.0, 1.0), np.eye(4), "RAS", "x")
    assert vol.orientation_known is True and vol.geometry_warnings == []
    other = Volume(np.zeros((1, 2, 2), np.float32), (1.0, 1.0, 1.0), np.eye(4), "RAS", "y")
    vol.geometry_warnings.append("a")
    assert other.geometry_warnings == []  # not a shared default list


# ----------------------------------------------------------------------------- voxel sizes


@pytest.mark.parametrize("qform_code", [0, 1])
@pytest.mark.parametrize("bad", [0.0, np.nan, np.inf])
def test_zero_or_non_finite_voxel_size_is_rejected_not_made_1_mm(bad, qform_code):
    raw = without_orientation(pixdim=(4.0, bad, 0.8), qform_code=qform_code)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InvalidScanError, match="pixdim") as info:
            load_volume(raw)
    assert "Re-export" in str(info.value) or "Fix" in str(info.value)
    assert isinstance(info.value, SpineInputError)


def test_zero_voxel_size_of_an_in_memory_image_is_rejected():
    img = nib.Nifti1Image(random_data((5, 12, 10)), None)
    img.header["pixdim"][1:4] = (4.0, 0.0, 0.8)
    with pytest.raises(InvalidScanError, match="voxel sizes"):
        volume_from_nifti(img)


@pytest.mark.filterwarnings("ignore:.*has no orientation:UserWarning")
@pytest.mark.parametrize("qform_code", [0, 1])
def test_negative_voxel_sizes_are_used_as_absolute_values_with_a_warning(qform_code):
    raw = without_orientation(pixdim=(-4.0, 1.0, -0.8), qform_code=qform_code)
    with pytest.warns(UserWarning, match="negative voxel sizes"):
        vol = load_volume(raw)
    assert sorted(vol.spacing) == pytest.approx([0.8, 1.0, 4.0])
    assert any("-4 x 1 x -0.8" in w and "4 x 1 x 0.8" in w for w in vol.geometry_warnings)
    assert vol.orientation_known is bool(qform_code)


@pytest.mark.filterwarnings("ignore:.*has no orientation:UserWarning")
def test_negative_voxel_sizes_in_memory_are_used_as_absolute_values():
    img = nib.Nifti1Image(random_data((5, 12, 10)), None)
    img.header["pixdim"][1:4] = (-4.0, 1.0, 0.8)
    plain = nib.Nifti1Image(random_data((5, 12, 10)), None)
    plain.header["pixdim"][1:4] = (4.0, 1.0, 0.8)
    with pytest.warns(UserWarning, match="negative"):
        vol = volume_from_nifti(img)
    np.testing.assert_allclose(vol.affine, plain.header.get_best_affine())  # not an x flip
    assert float(vol.header["pixdim"][1]) == 4.0


def test_zero_pixdim_is_harmless_when_an_sform_gives_the_geometry():
    affine = np.diag([4.0, 1.0, 0.8, 1.0])
    img = nib.Nifti1Image(random_data((5, 12, 10)), affine)
    img.set_sform(affine, code=1)
    img.header["pixdim"][1:4] = (0.0, 0.0, 0.0)
    vol = volume_from_nifti(img)
    assert vol.spacing == pytest.approx((4.0, 0.8, 1.0)) and vol.orientation_known


# ----------------------------------------------------------------------------- sagittal check


def test_axial_scan_is_refused_with_a_reason():
    # 0.8 x 0.8 mm pixels in the left-right/anterior-posterior plane, 4 mm slices along S-I.
    vol = load_volume(with_affine((24, 20, 6), np.diag([0.8, 0.8, 4.0])))
    with pytest.raises(InvalidScanError, match="axial, not sagittal") as info:
        check_sagittal(vol)
    message = str(info.value)
    assert "4 mm" in message and "superior-inferior" in message and "sagittal series" in message
    assert sagittal_problem(vol) == message


def test_coronal_scan_in_another_voxel_order_is_refused():
    # voxel axes: 0 -> superior (0.7 mm), 1 -> anterior (3.5 mm, slices), 2 -> left (0.7 mm)
    columns = [[0, 0, 0.7], [0, 3.5, 0], [-0.7, 0, 0]]
    vol = load_volume(with_affine((20, 6, 24), columns))
    with pytest.raises(InvalidScanError, match="coronal, not sagittal"):
        check_sagittal(vol)


def test_oblique_axial_scan_is_refused_and_oblique_sagittal_passes():
    a = np.radians(30)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    axial = rot @ np.diag([0.8, 0.8, 4.0])  # tilted 30 degrees about left-right
    with pytest.raises(InvalidScanError, match="axial"):
        check_sagittal(load_volume(with_affine((24, 20, 6), axial.T)))
    rot_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    sagittal = rot_z @ np.diag([4.0, 0.8, 0.8])  # slice normal 30 degrees off left-right
    check_sagittal(load_volume(with_affine((6, 20, 24), sagittal.T)))


def test_single_axial_image_is_refused_single_sagittal_image_passes():
    axial = load_volume(with_affine((24, 20, 1), np.diag([0.8, 0.8, 0.8])))
    assert axial.shape == (24, 1, 20)
    with pytest.raises(InvalidScanError, match="axial image"):
        check_sagittal(axial)
    check_sagittal(load_volume(with_affine((1, 20, 24), np.diag([4.0, 0.8, 0.8]))))
    check_sagittal(volume_from_image(random_data((40, 30))))  # PNG slice: (1, H, W)


def test_near_isotropic_scans_pass_whatever_their_voxel_order():
    check_sagittal(load_volume(with_affine((24, 20, 16), np.diag([1.0, 1.0, 1.2]))))
    check_sagittal(load_volume(with_affine((24, 20, 16), np.diag([1.0, 1.0, 1.0]))))


def test_scan_without_orientation_whose_thick_axis_is_not_the_guessed_slice_axis():
    # Stored like the real data (PIR, 1 x 1 x 4 mm) but with no orientation: nibabel guesses
    # voxel axis 0 is left-right, so the slices would be cut across the 4 mm axis.
    with pytest.warns(UserWarning, match="no orientation"):
        vol = load_volume(without_orientation(shape=(24, 20, 6), pixdim=(1.0, 1.0, 4.0)))
    with pytest.raises(InvalidScanError, match="no orientation") as info:
        check_sagittal(vol)
    assert "dcm2niix" in str(info.value)
    with pytest.warns(UserWarning, match="no orientation"):
        fine = load_volume(without_orientation(shape=(6, 20, 24), pixdim=(4.0, 1.0, 1.0)))
    check_sagittal(fine)  # the guess agrees with the voxel sizes: allowed, with the warning


@pytest.mark.parametrize("codes_", ["RAS", "LPS", "PIR", "ASL", "IRP", "SPL", "AIL"])
@pytest.mark.parametrize("size", [32, 64])
def test_phantoms_pass_in_any_orientation_and_size(codes_, size):
    # size 32 gives ~6-9 mm pixels, thicker than the 3-5 mm slices: still sagittal
    for seed in range(3):
        ph = make_phantom(seed, size=size, num_slices=4, orientation=codes_)
        vol = volume_from_nifti(ph.image)
        assert vol.geometry_warnings == []
        check_sagittal(vol)


def test_full_size_phantom_passes():
    vol = volume_from_nifti(make_phantom(0, size=256, num_slices=3).image)
    assert vol.spacing[0] > 2 * max(vol.spacing[1:])
    check_sagittal(vol)


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real data folder {REAL} is absent")
def test_every_real_scan_is_sagittal_with_a_known_orientation():
    paths = sorted(p for p in REAL.glob("*.nii.gz") if not p.name.endswith("_vertebrae.nii.gz"))
    assert paths
    for path in paths:
        vol = load_volume(path)
        assert vol.orientation_known and vol.geometry_warnings == [], path.name
        check_sagittal(vol)


# ----------------------------------------------------------------------------- label map codes


def test_label_map_of_a_scan_without_orientation_has_codes_0():
    with pytest.warns(UserWarning, match="no orientation"):
        vol = load_volume(without_orientation())
    labels = (np.arange(vol.data.size).reshape(vol.data.shape) % 5).astype(np.int32)
    out = vol.labels_to_nifti(labels)
    assert codes(out) == (0, 0)
    back = reread(out)
    assert codes(back) == (0, 0)
    np.testing.assert_allclose(back.affine, vol.affine)
    np.testing.assert_array_equal(load_label_map(nifti_bytes(out), like=vol), labels)


@pytest.mark.parametrize(("qcode", "scode"), [(1, 1), (1, 0), (0, 2), (2, 4), (3, 1)])
def test_label_map_codes_mirror_the_scan(qcode, scode):
    a = np.radians(5)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    columns = (rot @ np.diag([4.0, 1.0, 0.8])).T
    vol = load_volume(with_affine((5, 12, 10), columns, qcode, scode))
    labels = (vol.data > 50).astype(np.uint8)
    out = vol.labels_to_nifti(labels)
    assert codes(out) == (qcode, scode)
    back = reread(out)
    assert codes(back) == (qcode, scode)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    np.testing.assert_array_equal(load_label_map(nifti_bytes(out), like=vol), labels)


def test_label_map_of_a_nifti2_scan_keeps_its_codes():
    affine = np.diag([4.0, 1.0, 0.8, 1.0])
    img = nib.Nifti2Image(random_data((5, 12, 10)), affine)
    img.set_qform(affine, code=0)
    img.set_sform(affine, code=2)
    vol = load_volume(img.to_bytes())
    out = vol.labels_to_nifti(np.zeros(vol.shape, np.uint8))
    assert isinstance(out, nib.Nifti1Image) and codes(out) == (0, 2)


def test_display_layout_of_orientations_is_unchanged():
    # the geometry checks must not change how a scan with orientation is laid out
    data = random_data((5, 12, 10))
    for axcodes in ("RAS", "PIR", "LPS"):
        canon = np.array([[4.0, 0, 0, 0], [0, 0, -0.8, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
        ornt = nio.ornt_transform(nio.axcodes2ornt(("R", "I", "P")), nio.axcodes2ornt(axcodes))
        affine = canon @ nio.inv_ornt_aff(ornt, data.shape)
        img = nib.Nifti1Image(np.ascontiguousarray(nio.apply_orientation(data, ornt)), affine)
        vol = load_volume(img.to_bytes())
        np.testing.assert_array_equal(vol.data, data)
        check_sagittal(vol)
