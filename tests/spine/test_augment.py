"""spine.augment: joint image + mask augmentation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from spine.augment import SpineAugmenter


def square_sample():
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:40, 24:44] = 200
    masks = np.zeros((64, 64, 1), bool)
    masks[20:40, 24:44, 0] = True
    return image, masks


def test_masks_move_with_the_image():
    image, masks = square_sample()
    aug = SpineAugmenter(seed=0, p_affine=1.0, p_gamma=0, p_contrast=0, p_bias=0, p_noise=0,
                         p_blur=0, p_invert=0, rotate_deg=20)  # fmt: skip
    for _ in range(5):
        out, out_masks = aug(image, masks)
        bright = out[..., 0] > 100
        iou = (bright & out_masks[..., 0]).sum() / (bright | out_masks[..., 0]).sum()
        assert iou > 0.9
        assert out.dtype == np.uint8 and out_masks.dtype == bool


def test_known_shift_moves_the_square_exactly():
    image, masks = square_sample()
    matrix = np.array([[1.0, 0, 5], [0, 1.0, -3]])  # x + 5, y - 3
    out, out_masks = SpineAugmenter.warp(image, masks, matrix)
    expected = np.zeros_like(masks)
    expected[17:37, 29:49, 0] = True
    np.testing.assert_array_equal(out_masks, expected)
    assert (out[..., 0] == 200).sum() == 400


def test_intensity_ops_leave_masks_unchanged():
    image, masks = square_sample()
    aug = SpineAugmenter(seed=1, p_affine=0.0, p_gamma=1, p_contrast=1, p_bias=1, p_noise=1,
                         p_blur=1, p_invert=1)  # fmt: skip
    out, out_masks = aug(image, masks)
    np.testing.assert_array_equal(out_masks, masks)
    assert not np.array_equal(out, image)
    assert out.shape == image.shape


def test_same_seed_same_result():
    image, masks = square_sample()
    a, b = SpineAugmenter(seed=3), SpineAugmenter(seed=3)
    for _ in range(4):
        ia, ma = a(image, masks)
        ib, mb = b(image, masks)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)


def test_no_imgaug_interface_and_empty_masks_work():
    aug = SpineAugmenter(seed=0, p_affine=1.0)
    assert not hasattr(aug, "to_deterministic")
    image, _ = square_sample()
    out, masks = aug(image, np.zeros((64, 64, 0), bool))
    assert masks.shape == (64, 64, 0)


def test_field_of_view_cut_passes_through_the_outermost_body():
    from spine.augment import cut_field_of_view

    image = np.full((100, 40, 3), 120, np.uint8)
    masks = np.zeros((100, 40, 2), bool)
    masks[10:30, 5:35, 0] = True  # top body, rows 10-29
    masks[60:80, 5:35, 1] = True  # bottom body, rows 60-79
    sides = set()
    for seed in range(20):
        out, out_masks = cut_field_of_view(image, masks, np.random.default_rng(seed))
        kept = out_masks.sum(axis=(0, 1))
        cut_rows = np.flatnonzero((out == 0).all(axis=(1, 2)))
        assert cut_rows.size > 0 and not out_masks[cut_rows].any()  # nothing beyond the cut
        if cut_rows[0] == 0:  # top cut: 20-70 % of the top body's 20 rows gone
            sides.add("top")
            assert 0.3 * 600 <= kept[0] <= 0.8 * 600 and kept[1] == 600
        else:
            sides.add("bottom")
            assert 0.3 * 600 <= kept[1] <= 0.8 * 600 and kept[0] == 600
            assert cut_rows[-1] == 99
    assert sides == {"top", "bottom"}
    empty = np.zeros((100, 40, 0), bool)
    same, _ = cut_field_of_view(image, empty, np.random.default_rng(0))
    assert (same == image).all()


def test_each_body_gets_its_own_intensity_and_the_rest_is_untouched():
    from spine.augment import remap_body_intensities

    image = np.full((64, 64, 3), 100, np.uint8)
    masks = np.zeros((64, 64, 2), bool)
    masks[8:24, 8:24, 0] = True
    masks[36:52, 36:52, 1] = True
    out = remap_body_intensities(image, masks, np.random.default_rng(3))
    assert out.shape == image.shape and out.dtype == np.uint8
    # Far from both bodies (beyond the ~1.5 px blur of their weights): unchanged.
    assert (out[:, 30] == 100).all() and (out[60:, :30] == 100).all()
    # Inside, each body moved by its own offset, the same for the three channels.
    first, second = out[14:18, 14:18].astype(int), out[42:46, 42:46].astype(int)
    assert len(np.unique(first)) == 1 and len(np.unique(second)) == 1
    assert first[0, 0, 0] != 100 and second[0, 0, 0] != 100 and first[0, 0, 0] != second[0, 0, 0]
    # The change fades in over the blurred edge: no new hard step at the outline.
    row = out[16, 2:14, 0].astype(int)
    assert np.abs(np.diff(row)).max() < abs(int(first[0, 0, 0]) - 100)


def test_body_remap_keeps_a_body_s_texture_ordered_when_its_contrast_is_positive():
    from spine.augment import remap_body_intensities

    ramp = np.tile(np.linspace(60, 180, 32, dtype=np.float32), (32, 1)).astype(np.uint8)
    image = np.repeat(ramp[..., None], 3, axis=2)
    masks = np.ones((32, 32, 1), bool)
    out = remap_body_intensities(image, masks, np.random.default_rng(0))[16, :, 0].astype(int)
    assert np.all(np.diff(out) >= 0)  # a_k > 0: darker stays darker inside the body
    assert not np.array_equal(out, ramp[16].astype(int))
    unchanged = SpineAugmenter(seed=0, p_body=0.0, p_affine=0, p_gamma=0, p_contrast=0,
                               p_bias=0, p_noise=0, p_blur=0, p_invert=0)(image, masks)[0]
    assert np.array_equal(unchanged, image)  # p_body = 0 (the default): off


def test_settings_change_one_field_and_keep_the_rest_of_the_recipe():
    heavy = SpineAugmenter.heavy(seed=4)
    changed = heavy.with_settings({"p_resample": "0.3", "scale": "0.8, 1.2"})
    assert changed.p_resample == 0.3 and changed.scale == (0.8, 1.2)
    assert changed.seed == 4 and changed.p_curve == heavy.p_curve == 0.5
    assert heavy.p_resample == 0.25  # the recipe itself is untouched
    # Same seed and settings as a directly built augmenter: the same random draws.
    image, masks = square_sample()
    direct = SpineAugmenter(seed=5, p_resample=0.3)
    via_settings = SpineAugmenter(seed=5).with_settings({"p_resample": "0.3"})
    for _ in range(3):
        np.testing.assert_array_equal(direct(image, masks)[0], via_settings(image, masks)[0])


def test_bad_settings_are_refused_with_the_reason():
    aug = SpineAugmenter(seed=0)
    for settings, reason in [
        ({"p_resampel": "0.3"}, "unknown augmentation setting 'p_resampel'"),
        ({"seed": "3"}, "unknown augmentation setting 'seed'"),
        ({"p_blur": "often"}, "is not a number"),
        ({"p_blur": "1.5"}, "is a probability"),
        ({"scale": "0.9"}, "takes 2 number(s)"),
        ({"rotate_deg": "5,10"}, "takes 1 number(s)"),
    ]:
        with pytest.raises(ValueError, match=re.escape(reason)):
            aug.with_settings(settings)
