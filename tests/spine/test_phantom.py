"""spine.phantom: deterministic synthetic volumes whose labels follow the bodies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spine.phantom import main, make_phantom
from spine.volume import load_label_map, load_volume, nifti_bytes, volume_from_nifti


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(3, size=64, num_slices=8)


def display(ph):
    vol = volume_from_nifti(ph.image, ph.name)
    return vol, load_label_map(ph.labels, like=vol)


def test_same_seed_same_bytes_other_seed_differs():
    a = make_phantom(5, size=48, num_slices=6)
    b = make_phantom(5, size=48, num_slices=6)
    c = make_phantom(6, size=48, num_slices=6)
    assert nifti_bytes(a.image) == nifti_bytes(b.image)
    assert nifti_bytes(a.labels) == nifti_bytes(b.labels)
    assert a.levels == b.levels
    assert nifti_bytes(a.image) != nifti_bytes(c.image)


def test_labels_are_1_to_n_named_top_to_bottom(phantom):
    vol, labels = display(phantom)
    n = len(phantom.levels)
    assert np.array_equal(np.unique(labels), np.arange(n + 1))
    assert phantom.levels[-1] == "L5" and 5 <= n <= 9
    rows = [np.nonzero(labels == k)[1].mean() for k in range(1, n + 1)]
    assert np.all(np.diff(rows) > 0)  # label 1 is the highest


def test_image_and_labels_share_geometry(phantom):
    assert phantom.image.shape == phantom.labels.shape
    np.testing.assert_allclose(phantom.image.affine, phantom.labels.affine)
    vol = load_volume(nifti_bytes(phantom.image))
    assert vol.shape == (8, 64, 64)
    assert np.issubdtype(phantom.labels.get_data_dtype(), np.integer)


def test_full_size_phantom_has_clinical_anisotropic_voxels():
    ph = make_phantom(0, size=256, num_slices=2)
    slice_mm, row_mm, col_mm = ph.meta["spacing_mm"]
    assert 3.0 <= slice_mm <= 5.0
    assert 0.7 <= row_mm <= 1.2 and 0.7 <= col_mm <= 1.2


def test_orientations_vary_across_seeds():
    codes = {make_phantom(s, size=32, num_slices=4).meta["orientation"] for s in range(8)}
    assert len(codes) >= 3


def test_label_map_follows_the_bodies_dark_rim():
    """Bodies have a dark cortical rim: label boundaries sit on dark pixels, interiors brighter."""
    ph = make_phantom(2, size=128, num_slices=6, noise=0.0, fat_suppressed=False)
    vol, labels = display(ph)
    mid = int(np.argmax((labels > 0).sum((1, 2))))
    lab, img = labels[mid], vol.data[mid]
    from scipy import ndimage

    body = lab > 0
    interior = ndimage.binary_erosion(body, iterations=3)
    rim = body & ~ndimage.binary_erosion(body, iterations=1)
    assert img[rim].mean() < 0.8 * img[interior].mean()
    assert np.median(img[interior]) > np.median(img[rim])


def test_label_sacrum_adds_s1():
    ph = make_phantom(4, size=48, num_slices=6, label_sacrum=True)
    assert ph.levels[-1] in ("S1", "L5")  # S1 if its centre is inside the field of view
    ph2 = make_phantom(4, size=48, num_slices=6, fov_mm=360.0, label_sacrum=True)
    assert ph2.levels[-2:] == ["L5", "S1"]


def test_explicit_orientation_is_used():
    ph = make_phantom(1, size=32, num_slices=4, orientation="LPS", oblique_deg=0)
    assert ph.meta["orientation"] == "LPS"


def test_cli_writes_real_data_naming(tmp_path):
    assert main(["--out", str(tmp_path), "--count", "2", "--seed", "7", "--size", "40"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "phantom_007.nii.gz", "phantom_007_levels.json", "phantom_007_vertebrae.nii.gz",
        "phantom_008.nii.gz", "phantom_008_levels.json", "phantom_008_vertebrae.nii.gz",
    ]  # fmt: skip
    levels = json.loads((tmp_path / "phantom_007_levels.json").read_text())["levels"]
    vol = load_volume(tmp_path / "phantom_007.nii.gz")
    labels = vol.load_label_map(tmp_path / "phantom_007_vertebrae.nii.gz")
    assert labels.max() == len(levels)


@pytest.mark.parametrize("count", ["0", "-3", "two"])
def test_cli_refuses_a_bad_count_as_a_usage_error(count, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "o"), "--count", count])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: spine-phantom ")
    assert "spine-phantom: error: argument --count" in err
    assert not (tmp_path / "o").exists()


def test_cli_reports_an_unwritable_output_in_one_line(tmp_path, capsys):
    out = tmp_path / "a_file"
    out.write_text("not a folder")
    assert main(["--out", str(out / "sub"), "--count", "1", "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spine-phantom: error: cannot create the output folder")
    assert err.count("\n") == 1 and "Traceback" not in err
