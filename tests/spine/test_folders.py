"""spine.folders: what a data folder holds, the one answer spine-prepare, spine-train and
spine-evaluate share (pairs, layouts, subjects, sources, splits, level names)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spine.errors import SpineInputError
from spine.folders import (
    SCAN_SUFFIXES,
    VolumePair,
    find_pairs,
    folder_kind,
    is_label_map,
    is_nifti,
    is_png_folder,
    label_map_name,
    levels_name,
    nifti_name,
    nifti_stem,
    pair_levels,
    parse_level_range,
    slice_image_name,
    source_of,
    split_subjects,
)


def _touch_pair(folder: Path, name: str, suffix: str = ".nii.gz") -> None:
    (folder / f"{name}{suffix}").write_bytes(b"")
    (folder / f"{name}_vertebrae{suffix}").write_bytes(b"")


def test_file_names_of_scans_and_label_maps():
    assert is_nifti("a.nii") and is_nifti("a.nii.gz") and not is_nifti("a.png")
    assert is_label_map("a_vertebrae.nii.gz") and is_label_map("a_vertebrae.nii")
    assert not is_label_map("a.nii.gz")
    assert [nifti_stem(n) for n in ("x.nii.gz", "x.nii", "x.png")] == ["x", "x", "x"]
    assert label_map_name("chu2015_02") == "chu2015_02_vertebrae.nii.gz"


def test_pairs_are_scans_with_their_label_maps_sorted_by_subject(tmp_path):
    _touch_pair(tmp_path, "myosegmentum_11")
    _touch_pair(tmp_path, "chu2015_02")
    _touch_pair(tmp_path, "plain_03", suffix=".nii")  # uncompressed NIfTI pairs too
    (tmp_path / "lonely.nii.gz").write_bytes(b"")
    pairs = find_pairs(tmp_path)
    assert [p.subject for p in pairs] == ["chu2015_02", "myosegmentum_11", "plain_03"]
    assert [p.source for p in pairs] == ["chu2015", "myosegmentum", "plain"]
    assert pairs[2].labels.name == "plain_03_vertebrae.nii"


def test_pairs_from_images_and_masks_folders_match_by_name(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "Case7.nii.gz").write_bytes(b"")
    (tmp_path / "masks" / "mask_case7.nii.gz").write_bytes(b"")
    (tmp_path / "images" / "Case8.nii.gz").write_bytes(b"")  # no mask: left out
    pairs = find_pairs(tmp_path)
    assert [(p.subject, p.labels.name) for p in pairs] == [("Case7", "mask_case7.nii.gz")]
    assert folder_kind(tmp_path) == "volumes" and not is_png_folder(tmp_path)


def test_folder_kinds(tmp_path):
    png = tmp_path / "png"
    (png / "images").mkdir(parents=True)
    (png / "masks").mkdir()
    (png / "images" / "a.png").write_bytes(b"")
    prepared = tmp_path / "prepared"
    (prepared / "train").mkdir(parents=True)
    (prepared / "val").mkdir()
    via = tmp_path / "via"
    via.mkdir()
    (via / "via_region_data.json").write_text("{}")
    assert [folder_kind(f) for f in (png, prepared, via, tmp_path)] == [
        "png", "prepared", "via", "volumes"]
    with pytest.raises(SpineInputError, match="data folder not found"):
        folder_kind(tmp_path / "missing")


def test_pairs_keep_the_subset_of_a_split(tmp_path):
    for name in ("a_01", "a_02", "b_01"):
        _touch_pair(tmp_path, name)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["a_01"], "val": ["a_02", "b_01.nii.gz"]}))
    assert [p.subject for p in find_pairs(tmp_path, split, "val")] == ["a_02", "b_01"]
    assert [p.subject for p in find_pairs(tmp_path, split)] == ["a_02", "b_01"]  # default val
    assert [p.subject for p in find_pairs(tmp_path, split, "train")] == ["a_01"]


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda d: d / "missing", "data folder not found"),
        (lambda d: d, "No scan/label-map pairs .*_vertebrae"),
    ],
)
def test_pairs_user_errors(tmp_path, setup, match):
    with pytest.raises(SpineInputError, match=match):
        find_pairs(setup(tmp_path))


def test_pairs_refuse_a_subset_without_a_split_and_an_unknown_subset(tmp_path):
    _touch_pair(tmp_path, "a_01")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["a_01"]}))
    with pytest.raises(SpineInputError, match="no subset 'test'"):
        find_pairs(tmp_path, split, "test")
    with pytest.raises(SpineInputError, match="--subset needs --split"):
        find_pairs(tmp_path, None, "val")
    split.write_text(json.dumps({"val": ["zz_09"]}))
    with pytest.raises(SpineInputError, match="None of the 1 subjects of subset 'val'"):
        find_pairs(tmp_path, split, "val")


def test_source_is_the_prefix_before_the_number():
    assert source_of("chu2015_04") == "chu2015"
    assert source_of("myosegmentum_31") == "myosegmentum"
    assert source_of("phantom_007") == "phantom"
    assert source_of("42") == "42"


def test_level_ranges_expand_across_regions():
    assert parse_level_range("T11-L5 (per source: lower seven bodies)") == [
        "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    assert parse_level_range("L1-L5") == ["L1", "L2", "L3", "L4", "L5"]
    assert parse_level_range("L5-L1") is None
    assert parse_level_range("unknown") is None


def test_pair_levels_come_from_the_index_csv(tmp_path):
    (tmp_path / "index.csv").write_text(
        "image,vertebrae,levels_top_to_bottom\nx_01.nii.gz,x_01_vertebrae.nii.gz,L1-L5\n")
    pair = VolumePair("x_01", tmp_path / "x_01.nii.gz", tmp_path / "x_01_vertebrae.nii.gz")
    assert pair_levels(pair) == ["L1", "L2", "L3", "L4", "L5"]
    other = VolumePair("y_01", tmp_path / "y_01.nii.gz", tmp_path / "y_01_vertebrae.nii.gz")
    assert pair_levels(other) is None


def test_pair_levels_of_a_phantom_come_from_its_sidecar(tmp_path):
    from spine.phantom import make_phantom

    ph = make_phantom(3, size=32, num_slices=3, name="phantom_03")
    ph.save(tmp_path)
    (pair,) = find_pairs(tmp_path)
    assert pair_levels(pair) == ph.levels


def test_split_is_by_subject_stratified_and_reproducible():
    subjects = [f"a_{i:02d}" for i in range(17)] + [f"b_{i:02d}" for i in range(44)]
    one = split_subjects(subjects, 0.25, seed=0)
    assert split_subjects(subjects, 0.25, seed=0) == one
    assert split_subjects(subjects, 0.25, seed=1) != one
    assert not set(one["train"]) & set(one["val"])
    assert sorted(one["train"] + one["val"]) == sorted(subjects)
    assert sum(s.startswith("a_") for s in one["val"]) == 4  # round(17 / 4)
    assert sum(s.startswith("b_") for s in one["val"]) == 11


def test_written_names_read_back_as_what_they_are():
    assert nifti_name("sub01") == "sub01.nii.gz" and nifti_stem(nifti_name("sub01")) == "sub01"
    assert is_label_map(label_map_name("sub01")) and not is_label_map(nifti_name("sub01"))
    assert levels_name("sub01") == "sub01_levels.json"
    assert slice_image_name("sub01", 7) == "sub01_s007.png"
    assert slice_image_name("sub01", 12, ".jpg") == "sub01_s012.jpg"


def test_every_scan_suffix_is_kept_by_the_upload_names_and_dispatched_by_the_loader():
    from spine.names import safe_filename

    assert {".nii.gz", ".nii", ".zip", ".dcm", ".png", ".jpg"} <= set(SCAN_SUFFIXES)
    for suffix in SCAN_SUFFIXES:
        assert safe_filename(f"../a b{suffix.upper()}") == f"a b{suffix}"
