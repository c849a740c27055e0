"""spine.dataset: SpineDataset from volumes and from VIA folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spine.dataset import SpineDataset
from spine.errors import AnnotationError
from spine.folders import VolumePair
from spine.phantom import make_phantom
from spine.prepare import export_subject
from spine.via import write_via
from spine.volume import load_label_map, volume_from_nifti


@pytest.fixture(scope="module")
def volume_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vols")
    ph = make_phantom(11, size=64, num_slices=8)
    ph.save(folder)
    return folder / f"{ph.name}.nii.gz", folder / f"{ph.name}_vertebrae.nii.gz", ph


def test_volume_slices_with_vertebrae_become_images(volume_pair):
    image, labels, ph = volume_pair
    ds = SpineDataset(ignore_unlabelled=False)  # ignore regions: test_ignore_regions below
    added = ds.load_volumes([(image, labels)])
    ds.prepare()
    vol = volume_from_nifti(ph.image)
    lab = load_label_map(ph.labels, like=vol)
    expected = [s for s in range(vol.num_slices) if lab[s].any()]
    assert added == ds.num_images == len(expected)
    assert ds.class_names == ["BG", "vertebra"]
    first = ds.image_info[0]["slice"]
    img = ds.load_image(0)
    masks, class_ids = ds.load_mask(0)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert masks.dtype == bool and masks.shape[:2] == (64, 64)
    assert masks.shape[-1] == len(np.unique(lab[first])) - 1
    assert (class_ids == 1).all() and class_ids.dtype == np.int32
    np.testing.assert_array_equal(masks.any(-1), lab[first] > 0)
    assert ds.image_reference(0) == f"{image} slice {first}"


def test_min_area_drops_small_instances_and_the_slices_left_without_any(volume_pair):
    image, labels, ph = volume_pair
    lab = load_label_map(ph.labels, like=volume_from_nifti(ph.image))
    min_area = 96  # between this phantom's body areas (76..101 px): some go, some stay
    areas = [np.bincount(lab[s].ravel())[1:] for s in range(lab.shape[0])]
    expected = {s: int((a >= min_area).sum()) for s, a in enumerate(areas) if (a >= min_area).any()}
    assert 0 < len(expected) < lab.shape[0]  # the threshold drops whole slices, not all
    assert sum(expected.values()) < sum(int((a > 0).sum()) for a in areas)
    ds = SpineDataset(ignore_unlabelled=False)
    assert ds.load_volumes([VolumePair("p", image, labels)], min_area=min_area) == len(expected)
    ds.prepare()
    kept = {info["slice"]: ds.load_mask(i)[0] for i, info in enumerate(ds.image_info)}
    assert {s: m.shape[-1] for s, m in kept.items()} == expected
    for s, masks in kept.items():  # the instances kept are exactly the large ones
        assert sorted(masks.sum(axis=(0, 1)).tolist()) == sorted(
            int(a) for a in areas[s] if a >= min_area)


def test_via_folder_gives_the_same_masks_as_the_volume(volume_pair, tmp_path):
    image, labels, _ = volume_pair
    entries = export_subject(image, labels, "p_01", tmp_path, min_area=0, empty_per_volume=0)
    write_via(entries, tmp_path / "via_region_data.json")
    via_ds, vol_ds = SpineDataset(), SpineDataset(ignore_unlabelled=False)
    via_ds.load_via_folder(tmp_path)
    vol_ds.load_volumes([(image, labels)])
    via_ds.prepare()
    vol_ds.prepare()
    assert via_ds.num_images == vol_ds.num_images
    for i in range(via_ds.num_images):
        np.testing.assert_array_equal(via_ds.load_image(i), vol_ds.load_image(i))
        a, _ = via_ds.load_mask(i)
        b, _ = vol_ds.load_mask(i)
        assert a.shape == b.shape
        iou = (a & b).sum((0, 1)) / (a | b).sum((0, 1))
        assert iou.min() >= 0.8  # small 64-px bodies; larger ones are >= 0.95 (test_via)
        assert iou.mean() >= 0.9


def test_via_folder_with_missing_images_is_an_annotation_error(tmp_path):
    (tmp_path / "via_region_data.json").write_text(
        json.dumps({"x.png1": {"filename": "x.png", "size": 1, "regions": []}})
    )
    with pytest.raises(AnnotationError, match="x.png"):
        SpineDataset().load_via_folder(tmp_path)
    with pytest.raises(AnnotationError, match="via_region_data.json"):
        SpineDataset().load_via_folder(tmp_path / "nothing")


def test_neighbour_channels_hold_the_slices_on_either_side(volume_pair):
    image, labels, ph = volume_pair
    plain, context = SpineDataset(), SpineDataset(neighbour_channels=True)
    plain.load_volumes([(image, labels)], empty_slices=8)  # every slice, edges included
    context.load_volumes([(image, labels)], empty_slices=8)
    plain.prepare()
    context.prepare()
    grey = {info["slice"]: plain.load_image(i)[..., 0] for i, info in enumerate(plain.image_info)}
    last = max(grey)
    assert sorted(grey) == list(range(last + 1))
    for i, info in enumerate(context.image_info):
        s = info["slice"]
        rgb = context.load_image(i)
        np.testing.assert_array_equal(rgb[..., 0], grey[max(s - 1, 0)])
        np.testing.assert_array_equal(rgb[..., 1], grey[s])
        np.testing.assert_array_equal(rgb[..., 2], grey[min(s + 1, last)])
        # the masks are those of the centre slice, whatever the channels hold
        np.testing.assert_array_equal(context.load_mask(i)[0], plain.load_mask(i)[0])


def test_grey_via_images_are_refused_where_neighbour_channels_are_needed(volume_pair, tmp_path):
    image, labels, _ = volume_pair
    entries = export_subject(image, labels, "p_01", tmp_path, min_area=0, empty_per_volume=0)
    write_via(entries, tmp_path / "via_region_data.json")
    with pytest.raises(AnnotationError, match="--neighbour-channels"):
        SpineDataset(neighbour_channels=True).load_via_folder(tmp_path)
    assert SpineDataset().load_via_folder(tmp_path) == len(entries)  # grey model: accepted
