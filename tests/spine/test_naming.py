"""Level names from evidence: counted up from a found S1, with a confidence per name.

spine.levels.name_from_evidence on its own, then through spine.pipeline on phantoms whose
S1 is labelled (an oracle stands in for the network and calls S1 by its class), then the
measurement tables and CSV that carry the confidence and say when the names are unsure.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle import shuffled_oracle

from spine import export, pipeline
from spine.dataset import S1_CLASS_ID
from spine.levels import UNANCHORED_CONFIDENCE, name_from_evidence
from spine.phantom import make_phantom
from spine.volume import volume_from_nifti

ROWS = np.array([20.0, 60.0, 100.0, 140.0, 180.0, 220.0])  # six bodies, regular spacing


def test_s1_anchors_the_names_and_the_body_count_above_it_does_not_matter():
    s1 = np.array([0, 0, 0, 0, 0, 0.93])
    naming = name_from_evidence(ROWS, s1)
    assert naming.names == ["L1", "L2", "L3", "L4", "L5", "S1"] and naming.anchored
    assert naming.confidence == pytest.approx([0.93] * 6) and naming.note == ""
    # One more body at the top (T12 in view) keeps every other name: no shift.
    more = name_from_evidence(np.r_[-20.0, ROWS], np.r_[0.0, s1])
    assert more.names == ["T12", "L1", "L2", "L3", "L4", "L5", "S1"]


def test_counting_from_the_lowest_body_would_shift_names_when_s1_is_found():
    # The old rule named the lowest body L5: with S1 found, L5 is the one above it.
    naming = name_from_evidence(ROWS, np.array([0, 0, 0, 0, 0, 0.9]))
    assert naming.names[-1] == "S1" and naming.names[-2] == "L5"


def test_a_gap_halves_the_confidence_of_names_across_it():
    rows = np.array([20.0, 60.0, 140.0, 180.0, 220.0])  # the body at 100 was missed
    naming = name_from_evidence(rows, np.array([0, 0, 0, 0, 0.9]))
    assert naming.names == ["L2", "L3", "L4", "L5", "S1"]  # L1/L2 above the gap: shifted
    assert naming.confidence == pytest.approx([0.45, 0.45, 0.9, 0.9, 0.9])
    assert "missed body" in naming.note


def test_without_s1_names_are_counted_and_marked_unsure():
    naming = name_from_evidence(ROWS[:5], np.zeros(5))
    assert naming.names == ["L1", "L2", "L3", "L4", "L5"] and not naming.anchored
    assert naming.confidence == [UNANCHORED_CONFIDENCE] * 5
    assert "No S1" in naming.note
    assert name_from_evidence(ROWS[:3], np.zeros(3), "S1").names == ["L4", "L5", "S1"]


def test_two_levels_that_look_like_s1_make_every_name_unsure():
    # L5 looks like S1 too (a sacralised L5 or a lumbarised S1): the strongest stays S1, but
    # where the lumbar spine ends is in doubt, so every name is halved and the note says why.
    naming = name_from_evidence(ROWS, np.array([0, 0, 0, 0, 0.6, 0.95]))
    assert naming.names[-1] == "S1" and naming.names[-2] == "L5"
    assert naming.confidence == pytest.approx([0.475] * 6)
    assert "More than one" in naming.note and "transitional" in naming.note


def test_one_vertebra_seen_twice_shares_its_name_and_does_not_shift_the_others():
    # L3 comes as two outlines 4 px apart (a piece the slices did not link), S1 as two.
    rows = np.array([20.0, 60.0, 98.0, 102.0, 140.0, 180.0, 218.0, 222.0])
    s1 = np.array([0, 0, 0, 0, 0, 0, 0.9, 0.8])
    naming = name_from_evidence(rows, s1)
    assert naming.names == ["L1", "L2", "L3", "L3", "L4", "L5", "S1", "S1"]
    assert naming.confidence == pytest.approx([0.9, 0.9, 0.45, 0.45, 0.9, 0.9, 0.45, 0.45])
    assert "seen twice" in naming.note and "More than one" not in naming.note
    assert "missed body" not in naming.note  # duplicates do not shrink the spacing
    # Without S1 the count from the lowest body skips duplicates the same way.
    assert name_from_evidence(rows[:6], np.zeros(6)).names == ["L1", "L2", "L3", "L3", "L4", "L5"]


def test_vertebral_spacing_is_not_pulled_down_by_duplicates():
    from spine.levels import vertebral_spacing

    assert vertebral_spacing(ROWS) == pytest.approx(40.0)
    with_pieces = np.sort(np.r_[ROWS, ROWS[1:4] + 3.0])  # three bodies seen twice
    assert vertebral_spacing(with_pieces) == pytest.approx(37.0)
    assert np.isnan(vertebral_spacing(ROWS[:1]))


@pytest.fixture(scope="module")
def sacral_phantom():
    """A phantom whose S1 is in view and labelled (levels end with S1)."""
    for seed in range(20):
        ph = make_phantom(seed, size=64, num_slices=6, label_sacrum=True)
        if ph.levels[-1] == "S1":
            return ph
    pytest.fail("no phantom with S1 in view in 20 seeds")


def _oracle(ph, calls_s1: bool = True):
    volume = volume_from_nifti(ph.image, name="sacral")
    truth = volume.load_label_map(ph.labels)
    s1_label = ph.levels.index("S1") + 1
    model = shuffled_oracle(volume, truth, {s1_label: S1_CLASS_ID} if calls_s1 else None)
    return pipeline.Segmenter(model, config=None), volume


def test_phantom_volume_is_named_from_its_s1(sacral_phantom):
    segmenter, volume = _oracle(sacral_phantom)
    result = segmenter.segment_volume(volume)
    assert result.levels == sacral_phantom.levels
    assert min(result.name_confidence) > 0.9 and result.naming_note == ""
    rows = result.measurements()
    assert [r["level"] for r in rows] == sacral_phantom.levels
    assert all(r["name_confidence"] > 0.9 and r["name_note"] == "" for r in rows)


def test_phantom_slice_is_named_from_its_s1(sacral_phantom):
    segmenter, volume = _oracle(sacral_phantom)
    mid = volume.num_slices // 2
    sl = segmenter.segment_slice(volume, mid)
    assert sl.levels[-1] == "S1" and sl.levels == sacral_phantom.levels[-sl.count :]


def test_without_s1_evidence_the_csv_says_the_names_are_unsure(sacral_phantom):
    segmenter, volume = _oracle(sacral_phantom, calls_s1=False)
    result = segmenter.segment_volume(volume)
    # S1 not recognised: counted from the lowest body as L5, every name off by one.
    assert result.levels[-1] == "L5"
    text = export.measurements_csv(result.measurements(), pipeline.VOLUME_COLUMNS)
    header, first = text.splitlines()[:2]
    assert header.split(",")[1] == "name_confidence"
    assert f",{UNANCHORED_CONFIDENCE}," in first and "No S1 found" in first


def test_user_override_names_from_the_chosen_lowest_level(sacral_phantom):
    segmenter, volume = _oracle(sacral_phantom, calls_s1=False)
    result = segmenter.segment_volume(volume).renamed("S1")
    assert result.levels == sacral_phantom.levels
    assert result.name_confidence == [1.0] * result.count and "set by you" in result.naming_note
    assert segmenter.segment_volume(volume).renamed(None).levels[-1] == "L5"


def test_s1_evidence_is_the_s1_probability_whichever_class_was_named():
    # Under DETECTION_SCORE "foreground" a detection scores 1 - P(background) (0.99) while
    # the network gave S1 only 0.8: the names rest on the 0.8, and on the 0.3 of a body
    # named "vertebral body" too.
    masks = np.zeros((8, 8, 2), bool)
    masks[1:3, 1:3, 0] = masks[5:7, 5:7, 1] = True
    detection = {"masks": masks, "scores": np.array([0.99, 0.97], np.float32),
                 "class_ids": np.array([S1_CLASS_ID, 1]),
                 "class_probs": np.array([[0.01, 0.19, 0.8], [0.03, 0.67, 0.3]], np.float32)}
    _, scores, s1 = pipeline.clean_detections(detection, min_score=0.9)
    np.testing.assert_allclose(scores, [0.99, 0.97])
    np.testing.assert_allclose(s1, [0.8, 0.3])
    # Matterport's results (no class_probs): the score of a detection named S1.
    del detection["class_probs"]
    np.testing.assert_allclose(pipeline.clean_detections(detection)[2], [0.99, 0.0])


def test_small_pieces_take_no_level_of_their_own():
    from spine.levels import name_with_pieces

    # A piece in a wide gap between L3 and L4, far enough from both to count as a level.
    rows = np.array([20.0, 60.0, 96.0, 119.0, 140.0, 180.0, 220.0])
    s1 = np.array([0, 0, 0, 0, 0, 0, 0.9])
    piece = np.array([False, False, False, True, False, False, False])
    assert name_from_evidence(rows, s1).names[:3] == ["T12", "L1", "L2"]  # counted: shifted
    naming = name_with_pieces(rows, s1, piece)
    assert naming.names == ["L1", "L2", "L3", "L4", "L4", "L5", "S1"]  # nearest: L4 (21 px)
    assert naming.confidence == pytest.approx([0.9, 0.9, 0.9, 0.45, 0.9, 0.9, 0.9])
    assert "Small pieces" in naming.note and naming.anchored
    # No pieces: the same as name_from_evidence.
    assert name_with_pieces(ROWS, s1[1:], np.zeros(6, bool)) == name_from_evidence(ROWS, s1[1:])


def test_a_small_piece_that_looks_like_s1_still_anchors_the_names():
    from spine.levels import name_with_pieces

    piece = np.array([False] * 5 + [True])  # S1 seen on one slice only
    naming = name_with_pieces(ROWS, np.array([0, 0, 0, 0, 0, 0.9]), piece)
    assert naming.names == ["L1", "L2", "L3", "L4", "L5", "S1"] and naming.anchored


def test_small_pieces_are_outlines_on_few_slices_with_few_voxels():
    slices = np.array([12, 1, 13, 2, 14, 3])
    voxels = np.array([9000, 400, 9500, 1000, 10000, 600])  # median 5000: pieces < 1250
    assert pipeline.small_pieces(slices, voxels, 20).tolist() == [
        False, True, False, True, False, False]  # fmt: skip (the last spans 3 slices)
    assert not pipeline.small_pieces(slices, voxels, 4).any()  # a thin scan: no pieces
    assert pipeline.small_pieces(np.zeros(0), np.zeros(0), 20).shape == (0,)


def test_a_piece_on_one_slice_of_a_volume_shares_a_neighbours_name(sacral_phantom):
    volume = volume_from_nifti(sacral_phantom.image, name="sacral")
    truth = volume.load_label_map(sacral_phantom.labels)
    levels = sacral_phantom.levels
    mid = volume.num_slices // 2
    # A 2x2 outline on one slice, in the gap below the second body, 60 % of a spacing above
    # the third: a level of its own if it were counted.
    rows = [np.nonzero(truth[mid] == k)[0].mean() for k in (2, 3)]
    cols = np.nonzero(truth[mid] == 3)[1]
    row = int(round(rows[1] - 0.6 * (rows[1] - rows[0])))
    col = int(round(cols.mean()))
    truth[mid, row : row + 2, col : col + 2] = np.where(
        truth[mid, row : row + 2, col : col + 2] == 0, len(levels) + 1, 0
    )
    assert (truth == len(levels) + 1).sum() > 0
    s1_label = levels.index("S1") + 1
    model = shuffled_oracle(volume, truth, {s1_label: S1_CLASS_ID})
    result = pipeline.Segmenter(model, config=None).segment_volume(volume)
    # Each true body's name: that of the output label covering most of it (labels are 1..N).
    bodies = [result.levels[int(np.bincount(result.labels[truth == k]).argmax()) - 1]
              for k in range(1, len(levels) + 1)]  # fmt: skip
    assert bodies == levels
    piece = int(np.bincount(result.labels[truth == len(levels) + 1]).argmax()) - 1
    assert result.levels[piece] in levels[1:3]  # the name of the body above or below it
    (body,) = [k for k, name in enumerate(result.levels) if name == result.levels[piece]
               and k != piece]  # fmt: skip
    assert result.name_confidence[piece] == pytest.approx(0.5 * result.name_confidence[body])
    assert "Small pieces" in result.naming_note
