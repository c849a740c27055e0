"""spine.via: every VIA variant in, VIA 2 out, masks survive the round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spine.errors import AnnotationError
from spine.via import (
    Region,
    mask_to_polygon,
    masks_to_via_entry,
    read_via,
    region_to_mask,
    regions_to_masks,
    write_via,
)

POLY = {"name": "polygon", "all_points_x": [10, 30, 30, 10], "all_points_y": [5, 5, 25, 25]}


def via2_export():
    return {
        "a.png123": {
            "filename": "a.png", "size": 123, "file_attributes": {},
            "regions": [
                {"shape_attributes": POLY, "region_attributes": {"vertebra": "L1"}},
                {"shape_attributes": {"name": "rect", "x": 2, "y": 30, "width": 8, "height": 4},
                 "region_attributes": {"name": "L2"}},
            ],
        }
    }  # fmt: skip


def test_via2_export_regions_list():
    images = read_via(via2_export())
    assert [im.filename for im in images] == ["a.png"]
    assert [r.shape for r in images[0].regions] == ["polygon", "rect"]
    assert [r.label for r in images[0].regions] == ["L1", "L2"]
    assert images[0].size == 123


def test_via1_regions_dict_and_project_file_read_the_same(tmp_path):
    v1 = {"a.png123": {"fileref": "", "size": 123, "filename": "a.png", "base64_img_data": "",
                       "file_attributes": {},
                       "regions": {"1": via2_export()["a.png123"]["regions"][1],
                                   "0": via2_export()["a.png123"]["regions"][0]}}}  # fmt: skip
    project = {"_via_settings": {}, "_via_img_metadata": via2_export(), "_via_attributes": {}}
    path = tmp_path / "project.json"
    path.write_text(json.dumps(project))
    for source in (v1, path):
        regions = read_via(source)[0].regions
        assert [r.label for r in regions] == ["L1", "L2"]


def test_via3_project():
    v3 = {
        "project": {"pname": "spine"}, "config": {},
        "attribute": {"1": {"aname": "level", "anchor_id": "FILE1_Z0_XY1", "type": 1}},
        "file": {"1": {"fid": "1", "fname": "a.png", "type": 2, "loc": 1, "src": ""}},
        "view": {"1": {"fid_list": ["1"]}},
        "metadata": {
            "1_x": {"vid": "1", "flg": 0, "z": [], "xy": [7, 10, 5, 30, 5, 30, 25, 10, 25],
                    "av": {"1": "L3"}},
            "1_y": {"vid": "1", "flg": 0, "z": [], "xy": [3, 50, 50, 5], "av": {}},
            "1_z": {"vid": "1", "flg": 0, "z": [], "xy": [2, 0, 0, 4, 4], "av": {}},
        },
    }  # fmt: skip
    regions = read_via(v3)[0].regions
    assert [r.shape for r in regions] == ["polygon", "circle", "rect"]
    assert regions[0].label == "L3"
    np.testing.assert_array_equal(
        region_to_mask(regions[0], (40, 40)), region_to_mask(Region("polygon", POLY), (40, 40))
    )


def test_shapes_rasterise_to_expected_areas():
    shape = (100, 100)
    rect = Region("rect", {"x": 10, "y": 20, "width": 30, "height": 10})
    circle = Region("circle", {"cx": 50, "cy": 50, "r": 10})
    ellipse = Region("ellipse", {"cx": 50, "cy": 50, "rx": 20, "ry": 5, "theta": 0.0})
    rotated = Region("ellipse", {"cx": 50, "cy": 50, "rx": 20, "ry": 5, "theta": np.pi / 2})
    polyline = Region("polyline", POLY)
    assert region_to_mask(rect, shape).sum() == 300
    assert abs(region_to_mask(circle, shape).sum() - np.pi * 100) < 20
    e = region_to_mask(ellipse, shape)
    assert abs(e.sum() - np.pi * 100) < 25 and np.ptp(np.nonzero(e)[1]) > 35
    assert np.ptp(np.nonzero(region_to_mask(rotated, shape))[0]) > 35  # now tall
    assert region_to_mask(polyline, shape).sum() == 21 * 21
    assert regions_to_masks([rect, circle], shape).shape == (100, 100, 2)


def test_point_is_ignored_with_a_warning():
    data = via2_export()
    data["a.png123"]["regions"].append(
        {"shape_attributes": {"name": "point", "cx": 3, "cy": 4}, "region_attributes": {}}
    )
    with pytest.warns(UserWarning, match="point"):
        assert len(read_via(data)[0].regions) == 2


def test_configurable_attribute_and_checkbox_values():
    data = via2_export()
    data["a.png123"]["regions"][0]["region_attributes"] = {"lvl": {"L4": True, "L5": False}}
    assert read_via(data, attribute="lvl")[0].regions[0].label == "L4"


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "object"),
        ('{"k": {"size": 3}}', "filename"),
        ('{"k": {"filename": "a.png", "regions": [{"shape_attributes": '
         '{"name": "polygon", "all_points_x": [1, 2], "all_points_y": [1]}}]}}', "x and y"),
        ('{"k": {"filename": "a.png", "regions": [{"shape_attributes": '
         '{"name": "rect", "x": 1}}]}}', "lacks"),
    ],
)  # fmt: skip
def test_bad_json_raises_annotation_error(text, match):
    with pytest.raises(AnnotationError, match=match):
        read_via(text)


def test_missing_file_raises_annotation_error(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        read_via(tmp_path / "none.json")


def test_mask_to_via_to_mask_keeps_iou(tmp_path):
    yy, xx = np.mgrid[:80, :90]
    masks = np.stack(
        [
            (yy - 20) ** 2 / 100 + (xx - 30) ** 2 / 300 < 1,  # ellipse
            (np.abs(yy - 55) < 12) & (np.abs(xx - 60) < 15) & ~((yy > 60) & (xx > 68)),  # L
            (np.abs(yy - 60) + np.abs(xx - 20) < 10),  # diamond
        ],
        axis=-1,
    )
    entry = masks_to_via_entry("s.png", masks, labels=["L1", "L2", "L3"], size=10)
    path = write_via([entry], tmp_path / "via_region_data.json")
    image = read_via(path)[0]
    back = regions_to_masks(image.regions, (80, 90))
    iou = (back & masks).sum((0, 1)) / (back | masks).sum((0, 1))
    assert iou.min() >= 0.95
    assert [r.label for r in image.regions] == ["L1", "L2", "L3"]


def test_mask_to_polygon_of_empty_mask_is_empty():
    assert mask_to_polygon(np.zeros((5, 5), bool)).shape == (0, 2)
    entry = masks_to_via_entry("e.png", np.zeros((5, 5, 1), bool))
    assert entry["regions"] == []
