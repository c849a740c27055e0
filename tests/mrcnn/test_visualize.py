"""mrcnn.visualize: overlays change exactly what they should; figures are built, never shown."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from mrcnn import visualize as V


def _masks():
    masks = np.zeros((40, 50, 2), bool)
    masks[5:15, 5:20, 0] = True
    masks[20:35, 25:45, 1] = True
    return masks


def test_random_colors_are_deterministic_distinct_and_in_unit_range():
    colors = V.random_colors(6)
    assert colors == V.random_colors(6)
    assert len(set(colors)) == 6
    assert all(0 <= c <= 1 for color in colors for c in color)


def test_apply_mask_blends_only_inside_the_mask():
    image = np.full((4, 4, 3), 100, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = True
    out = V.apply_mask(image, mask, (1.0, 0.0, 0.0), alpha=0.5)
    np.testing.assert_array_equal(out[1, 2], [178, 50, 50])  # 100/2 + 255/2 rounded
    out[1, 2] = 100
    np.testing.assert_array_equal(out, image)
    assert image[1, 2, 0] == 100  # input untouched


def test_overlay_changes_exactly_the_masked_pixels_without_outlines_or_boxes():
    image = np.zeros((40, 50, 3), np.uint8)
    masks = _masks()
    out = V.draw_overlay(image, masks, show_outlines=False, show_boxes=False)
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    changed = (out != image).any(axis=-1)
    np.testing.assert_array_equal(changed, masks.any(axis=-1))


def test_overlay_outlines_and_boxes_draw_on_the_borders():
    image = np.zeros((40, 50), np.uint8)  # grey input becomes RGB
    masks = _masks()
    colors = [(0, 1, 0), (0, 0, 1)]
    out = V.draw_overlay(image, masks, colors=colors, show_masks=False, show_boxes=True)
    assert out.shape == (40, 50, 3)
    np.testing.assert_array_equal(out[5, 10], [0, 255, 0])  # top edge of instance 0
    np.testing.assert_array_equal(out[10, 10], [0, 0, 0])  # its interior is untouched
    np.testing.assert_array_equal(out[34, 44], [0, 0, 255])  # corner of instance 1


def test_overlay_labels_and_scores_write_text():
    image = np.zeros((120, 160, 3), np.uint8)
    masks = np.zeros((120, 160, 1), bool)
    masks[60:100, 40:120] = True
    plain = V.draw_overlay(image, masks, show_masks=False, show_outlines=False)
    text = V.draw_overlay(
        image, masks, labels=["L4"], scores=[0.93], show_masks=False, show_outlines=False
    )
    np.testing.assert_array_equal(plain, image)
    written = (text != image).any(axis=-1)
    assert written[:60].any() and not written[100:].any()  # above the box only


def test_display_instances_and_pr_curve_return_figures(tmp_path):
    masks = _masks()
    boxes = np.array([[5, 5, 15, 20], [20, 25, 35, 45]])
    fig = V.display_instances(
        np.zeros((40, 50, 3), np.uint8), boxes, masks, np.array([1, 1]), ["BG", "vertebra"],
        scores=np.array([0.9, 0.8]), title="t", figsize=(4, 4),
    )  # fmt: skip
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "t"
    assert len(fig.axes[0].patches) == 2 and len(fig.axes[0].texts) == 2
    fig.savefig(tmp_path / "instances.png")
    pr = V.plot_precision_recall(0.5, np.array([1, 1, 0]), np.array([0, 0.5, 1]))
    assert isinstance(pr, Figure)
    assert pr.axes[0].get_title() == "Precision-Recall Curve. AP@50 = 0.500"
    assert (tmp_path / "instances.png").stat().st_size > 0


@pytest.mark.parametrize("colors", [None, [(255, 0, 0), (0, 255, 0)]])
def test_overlay_accepts_default_and_0_255_colors(colors):
    out = V.draw_overlay(np.zeros((40, 50, 3), np.uint8), _masks(), colors=colors)
    assert out[10, 10].any()
