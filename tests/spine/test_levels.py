"""spine.levels: names from order along the spine."""

from __future__ import annotations

import numpy as np
import pytest

from spine.levels import SPINE_LEVELS, level_names, level_rank, order_top_to_bottom


def test_level_names_end_at_lowest():
    assert level_names(5) == ["L1", "L2", "L3", "L4", "L5"]
    assert level_names(7) == ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    assert level_names(3, lowest="S1") == ["L4", "L5", "S1"]
    assert level_names(0) == []


def test_level_names_beyond_c1_stay_unique():
    names = level_names(30)
    assert len(set(names)) == 30 and names[-1] == "L5" and names[6] == "C1"


def test_level_names_rejects_unknown_level():
    with pytest.raises(ValueError, match="unknown level"):
        level_names(3, lowest="L7")


def test_order_top_to_bottom_masks_and_boxes():
    masks = np.zeros((30, 10, 3), bool)
    masks[20:25, 2:5, 0] = True
    masks[2:6, 2:5, 1] = True
    masks[10:14, 2:5, 2] = True
    assert order_top_to_bottom(masks).tolist() == [1, 2, 0]
    boxes = np.array([[20, 0, 25, 5], [2, 0, 6, 5], [10, 0, 14, 5]])
    assert order_top_to_bottom(boxes).tolist() == [1, 2, 0]


def test_level_rank_runs_top_to_bottom_with_unknown_names_last():
    assert level_rank("C1") == 0
    assert level_rank("T12") < level_rank("L1") < level_rank("L5") < level_rank("S1")
    assert level_rank("X3") == level_rank("") == len(SPINE_LEVELS) == 33


def test_empty_masks_go_last():
    masks = np.zeros((10, 10, 2), bool)
    masks[5:7, 5:7, 1] = True
    assert order_top_to_bottom(masks).tolist() == [1, 0]
