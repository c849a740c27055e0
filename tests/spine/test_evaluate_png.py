"""spine.evaluation.png and metrics.score_slice: slice scores (found, named, false), and
spine-evaluate on a PNG folder."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from spine.evaluation.metrics import score_slice


def _labels(boxes, shape=(60, 40)):
    labels = np.zeros(shape, np.int32)
    for k, (y1, y2) in enumerate(boxes, start=1):
        labels[y1:y2, 10:30] = k
    return labels


GT = _labels([(2, 16), (22, 36), (42, 56)])  # three bodies
LEVELS = ["L4", "L5", "S1"]


def _pred(boxes, shape=(60, 40)):
    lab = _labels(boxes, shape)
    return lab[..., None] == np.arange(1, len(boxes) + 1)[None, None, :]


def test_exact_predictions_are_found_and_named():
    dice, found, named, false = score_slice(GT, LEVELS, _pred([(2, 16), (22, 36), (42, 56)]),
                                            LEVELS, semantic=False)
    assert dice == [1.0, 1.0, 1.0] and all(found) and all(named) and false == 0


def test_a_shifted_name_is_found_but_not_named_and_a_miss_is_neither():
    pred = _pred([(2, 16), (22, 36)])  # S1 missed, names shifted up by one
    dice, found, named, false = score_slice(GT, LEVELS, pred, ["L5", "S1"], semantic=False)
    assert found == [True, True, False] and named == [False, False, False]
    assert dice[2] == 0.0 and false == 0


def test_semantic_found_means_half_the_prediction_inside_and_ignore_zone_is_not_false():
    # A prediction half the size of body 1, fully inside: Dice 2/3 but 100 % inside.
    small = np.zeros((60, 40, 1), bool)
    small[2:9, 10:30] = True
    stray = np.zeros((60, 40, 1), bool)
    stray[57:60, 0:5] = True
    pred = np.concatenate([small, stray], axis=-1)
    _, found, _, false = score_slice(GT, LEVELS, pred, ["L4", "L5"], semantic=True)
    assert found == [True, False, False] and false == 1
    ignore = np.zeros((60, 40), bool)
    ignore[55:, :] = True
    assert score_slice(GT, LEVELS, pred, ["L4", "L5"], semantic=True, ignore=ignore)[3] == 0


def test_spine_evaluate_scores_a_png_folder_with_the_baseline(tmp_path):
    from spine.evaluate import main

    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    for i in range(4):
        image = np.full((64, 64), 20, np.uint8)
        image[8:56, 20:44] = 160
        Image.fromarray(image).save(tmp_path / "d" / "images" / f"P{i}_S1.png")
        Image.fromarray(((image > 100) * 5).astype(np.uint8)).save(
            tmp_path / "d" / "masks" / f"P{i}_S1.png"
        )
    assert main(["--data", str(tmp_path / "d"), "--baseline-only", "--subset", "all",
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    base = metrics["methods"]["baseline"]
    assert metrics["kind"] == "levels" and base["slices"] == 4 and base["bodies"] == 4
    assert 0.0 <= base["recall"] <= 1.0 and base["per_level"]["L5"]["bodies"] == 4
    assert "| found (recall) |" in (tmp_path / "out" / "REPORT.md").read_text()
    assert main(["--data", str(tmp_path / "d"), "--baseline-only", "--subset", "x",
                 "--out", str(tmp_path / "o2")]) == 2  # fmt: skip


def test_the_summary_says_whether_names_marked_sure_were_right():
    from spine.evaluation.png import FolderEvaluation, SliceScore

    def scored(named, confidence):
        return SliceScore("s", "p", ["L5", "S1"], [0.9, 0.9], [True, True], named,
                          ["L5", "S1"], confidence, 0, 0.1)  # fmt: skip

    ev = FolderEvaluation("model", "levels")
    ev.slices = [
        scored([True, True], [0.9, 0.9]),  # sure and right
        scored([True, True], [0.9, 0.9]),
        scored([False, True], [0.9, 0.9]),  # sure and wrong: what must stay rare
        scored([False, False], [0.3, 0.3]),  # marked unsure and wrong
    ]
    summary = ev.summary()
    assert summary["slices_names_unsure"] == 0.25
    assert summary["fully_right_when_sure"] == 2 / 3
    assert summary["fully_right_when_unsure"] == 0.0
    ev.slices = ev.slices[:2]
    assert ev.summary()["fully_right_when_unsure"] is None
