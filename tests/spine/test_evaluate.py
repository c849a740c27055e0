"""spine.evaluation.metrics and .run (volume metrics on hand-built label maps, slice AP, the
model path) and the spine-evaluate CLI (spine.evaluate). Data discovery: test_folders.py.

The metric tests use tiny label maps whose Dice values can be worked out by hand. The CLI
tests run --baseline-only on two small phantoms (and on two real volumes when the shared data
folder exists); an oracle model checks the model path with exact numbers; one slow test
builds a random-init Mask R-CNN to check the plumbing end to end.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from oracle import OracleModel

from spine import evaluate, pipeline
from spine.evaluation.metrics import (
    SliceEvaluation,
    envelope_ap,
    evaluate_slices,
    slice_detections_from_labels,
    volume_metrics,
)
from spine.evaluation.run import evaluate_case
from spine.folders import find_pairs
from spine.phantom import make_phantom

REAL_DATA = Path(__file__).parents[2].parent / "shared" / "data" / "real"


def _line(*segments: tuple[int, int]) -> np.ndarray:
    """A [1, 1, 40] label map from (label, length) runs, left to right."""
    values = np.concatenate([np.full(n, lab, dtype=np.int32) for lab, n in segments])
    return np.pad(values, (0, 40 - values.size))[None, None, :]


# ----------------------------------------------------------------------------- volume metrics
@pytest.fixture()
def hand_built():
    # GT: body 1 (10 voxels), body 2 (10), body 3 (4), then background.
    gt = _line((1, 10), (2, 10), (3, 4), (0, 16))
    # Prediction: 5 = body 1 exactly; 7 = 6 voxels of body 2 + 4 of background;
    # body 3 missed; 9 = 5 voxels of background (a false body).
    pred = _line((5, 10), (0, 4), (7, 6), (0, 4), (7, 4), (9, 5), (0, 7))
    return gt, pred


def test_dice_per_body_matches_each_body_to_its_largest_overlap(hand_built):
    scores = volume_metrics(*hand_built)
    np.testing.assert_array_equal(scores.gt_ids, [1, 2, 3])
    np.testing.assert_allclose(scores.dice, [1.0, 2 * 6 / 20, 0.0])
    np.testing.assert_array_equal(scores.matched, [5, 7, 0])


def test_mean_dice_counts_a_missed_body_as_zero(hand_built):
    assert volume_metrics(*hand_built).mean_dice == pytest.approx((1.0 + 0.6 + 0.0) / 3)


def test_recall_counts_bodies_above_dice_one_half(hand_built):
    assert volume_metrics(*hand_built).recall == pytest.approx(2 / 3)


def test_false_bodies_are_predictions_matching_no_body(hand_built):
    scores = volume_metrics(*hand_built)
    assert scores.false_bodies == 1
    np.testing.assert_array_equal(scores.false_ids, [9])


def test_foreground_dice_ignores_body_identity(hand_built):
    # GT foreground 24 voxels, predicted 25, overlap 10 + 6.
    assert volume_metrics(*hand_built).foreground_dice == pytest.approx(2 * 16 / 49)


def test_levels_name_the_ground_truth_bodies(hand_built):
    scores = volume_metrics(*hand_built, levels=["L3", "L4", "L5"])
    assert scores.per_level() == pytest.approx({"L3": 1.0, "L4": 0.6, "L5": 0.0})


def test_wrong_number_of_levels_is_ignored(hand_built):
    assert volume_metrics(*hand_built, levels=["L4", "L5"]).per_level() == {}


def test_a_merged_prediction_is_counted_as_a_merge():
    gt = _line((1, 10), (2, 10))
    pred = _line((4, 20))
    scores = volume_metrics(gt, pred)
    np.testing.assert_allclose(scores.dice, [2 / 3, 2 / 3])  # best-overlap: both "found"
    assert scores.merges == 1 and scores.false_bodies == 0


def test_empty_prediction_scores_zero():
    scores = volume_metrics(_line((1, 10), (2, 5)), np.zeros((1, 1, 40), np.int32))
    assert scores.mean_dice == 0.0 and scores.recall == 0.0 and scores.false_bodies == 0


def test_perfect_prediction_with_other_numbering_scores_one():
    gt = _line((1, 10), (2, 10), (3, 5))
    scores = volume_metrics(gt, np.where(gt > 0, 10 - gt, 0))
    assert scores.mean_dice == 1.0 and scores.recall == 1.0 and scores.false_bodies == 0


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="shape"):
        volume_metrics(np.zeros((1, 2, 3)), np.zeros((1, 3, 2)))


# ----------------------------------------------------------------------------- slice metrics
def _square(y: int, x: int, size: int = 10, shape=(40, 40)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y : y + size, x : x + size] = True
    return mask


def test_envelope_ap_is_the_area_under_the_precision_envelope():
    # Detections TP, FP, TP on 3 GT: precisions 1, 1/2, 2/3 at recalls 1/3, 1/3, 2/3.
    ap = envelope_ap(np.array([1, 0.5, 2 / 3]), np.array([1 / 3, 1 / 3, 2 / 3]))
    assert ap == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)


def test_slice_ap_of_one_hit_and_one_false_detection():
    gt = np.stack([_square(0, 0), _square(20, 20)], axis=-1)
    pred = np.stack([_square(0, 0), _square(0, 25)], axis=-1)  # second overlaps nothing
    ev = SliceEvaluation()
    ev.add(gt, pred, np.array([0.9, 0.8]))
    summary = ev.summary()
    assert summary["mAP50"] == pytest.approx(0.5)  # recall 1/2 at precision 1
    assert summary["pooled_AP50"] == pytest.approx(0.5)
    assert summary["mAP50_95"] == pytest.approx(0.5)  # the hit is exact at every threshold


def test_slice_ap_of_a_shifted_mask_drops_at_strict_thresholds():
    gt = _square(0, 0)[..., None]
    pred = _square(0, 2)[..., None]  # IoU = 80 / 120 = 0.667
    ev = SliceEvaluation()
    ev.add(gt, pred, np.array([0.9]))
    assert ev.summary()["mAP50"] == 1.0
    # Hits at thresholds .50 .55 .60 .65, misses from .70 on: 4 of 10.
    assert ev.summary()["mAP50_95"] == pytest.approx(0.4)


def test_an_empty_predicted_mask_counts_as_a_false_detection():
    gt = np.zeros((20, 20, 1), bool)
    gt[2:8, 2:8, 0] = True
    pred = np.zeros((20, 20, 3), bool)
    pred[2:8, 2:8, 1] = True  # the body, ranked below an empty mask
    pred[10:12, 10:12, 2] = True
    result = SliceEvaluation()
    result.add(gt, pred, np.array([0.9, 0.8, 0.7]))
    assert result.true_pos == [False, True, False]  # best score first
    assert result.ap50 == [pytest.approx(0.5)]  # precision 1/2 at the only recall step


def test_slice_without_predictions_has_zero_ap():
    ev = SliceEvaluation()
    ev.add(_square(0, 0)[..., None], np.zeros((40, 40, 0), bool), np.zeros(0))
    assert ev.summary()["mAP50"] == 0.0 and ev.num_gt == 1


def test_evaluate_slices_skips_slices_without_bodies():
    gt = np.zeros((3, 40, 40), np.int32)
    gt[1][_square(0, 0)] = 1
    ev = evaluate_slices(gt, slice_detections_from_labels(gt))
    assert ev.summary()["slices"] == 1 and ev.summary()["mAP50"] == 1.0


def test_label_map_detections_are_scored_by_extent():
    labels = np.zeros((1, 20, 20), np.int32)
    labels[0, :4, :4] = 1  # a full square: extent 1
    labels[0, 10:14, 10:14] = 2
    labels[0, 10:12, 12:14] = 0  # an L shape: 12 of its 16 box pixels
    (masks, scores), = slice_detections_from_labels(labels)
    np.testing.assert_allclose(scores, [1.0, 0.75])


# ----------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    """Two small phantoms (NAME.nii.gz, NAME_vertebrae.nii.gz, NAME_levels.json)."""
    folder = tmp_path_factory.mktemp("phantoms")
    for seed in (1, 2):
        make_phantom(seed, size=96, num_slices=8, name=f"phantom_{seed:02d}").save(folder)
    return folder


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_baseline_only_writes_metrics_tables_and_report(phantom_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert evaluate.main(["--data", str(phantom_dir), "--baseline-only", "--out", str(out),
                          "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    base = metrics["methods"]["baseline"]
    assert metrics["volumes"] == 2 and list(metrics["methods"]) == ["baseline"]
    assert 0.0 <= base["mean_dice"] <= 1.0 and 0.0 <= base["mAP50"] <= 1.0
    assert set(base["per_level"]) <= {"T11", "T12", "L1", "L2", "L3", "L4", "L5"}
    rows = _read_csv(out / "per_volume.csv")
    assert [r["name"] for r in rows] == ["phantom_01", "phantom_02"]
    assert {r["source"] for r in rows} == {"phantom"}
    for name in ("REPORT.md", "pr_curve.png", "dice_per_body.png", "dice_per_source.png"):
        assert (out / name).stat().st_size > 0
    assert "baseline mean Dice" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "/nonexistent/folder", "--baseline-only"], "data folder not found"),
        (["--weights", "/nonexistent/w.weights.h5"], "weights not found"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(phantom_dir, tmp_path, capsys, extra, message):
    argv = ["--data", str(phantom_dir), "--out", str(tmp_path / "o"), *extra]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_without_pairs_exits_2(tmp_path, capsys):
    assert evaluate.main(["--data", str(tmp_path), "--baseline-only", "--out",
                          str(tmp_path / "o")]) == 2
    assert "No scan/label-map pairs" in capsys.readouterr().err


@pytest.fixture(scope="module")
def prepared_dir(phantom_dir, tmp_path_factory):
    """spine-prepare's output (train/, val/ VIA folders, split.json) of the two phantoms."""
    from spine.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(phantom_dir, out, val_fraction=0.5, progress=False)
    return out


def test_cli_refuses_prepare_output_and_names_the_volumes_to_pass(
    prepared_dir, phantom_dir, tmp_path, capsys
):
    argv = ["--data", str(prepared_dir), "--weights", str(tmp_path / "absent.weights.h5"),
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert evaluate.main(argv) == 2  # the layout is checked before the model files
    err = capsys.readouterr().err
    assert err.startswith("spine-evaluate: error: ") and err.count("\n") == 1
    assert "spine-prepare's output" in err
    assert f"--data {phantom_dir.resolve()} --split {prepared_dir / 'split.json'}" in err
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_via_folder_saying_what_it_accepts(prepared_dir, tmp_path, capsys):
    argv = ["--data", str(prepared_dir / "train"), "--baseline-only", "--out", str(tmp_path)]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert "slice images with VIA annotations" in err
    assert "NAME_vertebrae.nii.gz pairs" in err and "PNG folder" in err


def test_data_help_names_every_layout_it_accepts():
    data = next(a for a in evaluate.build_parser()._actions if a.dest == "data")
    for layout in ("NAME_vertebrae.nii.gz pairs", "NIfTI", "PNG folder", "spine-prepare"):
        assert layout in data.help


@pytest.mark.slow  # ~25 s: the baseline on two full-size real volumes
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real data folder {REAL_DATA} not present")
def test_cli_baseline_only_on_two_real_volumes(tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"val": ["chu2015_02", "myosegmentum_01"]}))
    out = tmp_path / "eval"
    assert evaluate.main(["--data", str(REAL_DATA), "--split", str(split), "--subset", "val",
                          "--baseline-only", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    base = metrics["methods"]["baseline"]
    assert set(base["per_source"]) == {"chu2015", "myosegmentum"}
    assert base["gt_bodies"] == 7 + 5  # levels from index.csv: T11-L5 and L1-L5
    assert set(base["per_level"]) == {"T11", "T12", "L1", "L2", "L3", "L4", "L5"}
    assert np.isfinite(base["mean_dice"])


# ----------------------------------------------------------------------------- model path
def oracle_model(volume, labels: np.ndarray, lowest_score: float = 0.9) -> OracleModel:
    """The oracle for one scan; each slice's bodies score 0.99 at the top down to
    lowest_score at the bottom."""
    return OracleModel(
        [(volume, labels)], scores=lambda ids: np.linspace(0.99, lowest_score, len(ids))
    )


def test_an_oracle_model_scores_perfectly(phantom_dir):
    from spine.volume import load_label_map, load_volume

    case = find_pairs(phantom_dir)[0]
    volume = load_volume(case.image)
    model = oracle_model(volume, load_label_map(case.labels, like=volume))
    result = evaluate_case(case, pipeline.Segmenter(model, config=None), baseline=False)
    m = result.methods["model"]
    assert m.scores.mean_dice == 1.0 and m.scores.recall == 1.0 and m.scores.false_bodies == 0
    assert m.slices.summary()["mAP50"] == 1.0 and m.slices.summary()["mAP50_95"] == 1.0


def test_label_maps_use_the_operating_point_while_ap_ranks_every_detection(phantom_dir):
    from spine.volume import load_label_map, load_volume

    case = find_pairs(phantom_dir)[0]
    volume = load_volume(case.image)
    model = oracle_model(volume, load_label_map(case.labels, like=volume), lowest_score=0.3)
    segmenter = pipeline.Segmenter(model, config=None)
    result = evaluate_case(case, segmenter, baseline=False, min_score=0.5)
    m = result.methods["model"]
    # The lowest body scores 0.3 on every slice: below the operating point it is missing
    # from the label map, but ranked last it is still a true detection for AP.
    assert m.scores.recall < 1.0 and m.scores.false_bodies == 0
    assert m.slices.summary()["mAP50"] == 1.0


@pytest.mark.slow
def test_cli_end_to_end_with_a_random_init_model(phantom_dir, tmp_path):
    """Plumbing only: an untrained tiny Mask R-CNN is saved, loaded by spine-evaluate and run
    on 2 phantoms. Its numbers mean nothing; the test checks that every output is written."""
    from mrcnn.config import Config
    from mrcnn.model import MaskRCNN

    config = Config(NAME="tiny", NUM_CLASSES=2, BACKBONE="resnet18", BACKBONE_WIDTH=0.25,
                    IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64, RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128),
                    TOP_DOWN_PYRAMID_SIZE=32, FPN_CLASSIF_FC_LAYERS_SIZE=64,
                    MASK_HEAD_CONV_SIZE=32, POST_NMS_ROIS_INFERENCE=50,
                    DETECTION_MAX_INSTANCES=10, IMAGES_PER_GPU=1)
    model = MaskRCNN(mode="inference", config=config, model_dir=str(tmp_path))
    weights, config_path = tmp_path / "tiny.weights.h5", tmp_path / "tiny.toml"
    model.save_weights(str(weights))
    config.save_toml(config_path)
    out = tmp_path / "eval"
    assert evaluate.main(["--data", str(phantom_dir), "--weights", str(weights), "--config",
                          str(config_path), "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["model", "baseline"]
    rows = _read_csv(out / "per_volume.csv")
    assert sorted((r["name"], r["method"]) for r in rows) == [
        ("phantom_01", "baseline"), ("phantom_01", "model"),
        ("phantom_02", "baseline"), ("phantom_02", "model")]
    report = (out / "REPORT.md").read_text().splitlines()
    # One model row in the method table and one in the level-names table (phantoms name
    # their levels); the baseline names nothing, so it has only the first.
    assert sum(line.startswith("| model |") for line in report) == 2
    assert sum(line.startswith("| baseline |") for line in report) == 1
    assert "## Level names" in report


def test_false_bodies_outside_the_labelled_range_are_counted_apart():
    gt = np.zeros((1, 60, 20), np.int32)
    gt[0, 20:30, 5:15] = 1  # one labelled body in rows 20-29
    pred = np.zeros_like(gt)
    pred[0, 20:30, 5:15] = 1  # found
    pred[0, 2:10, 5:15] = 2  # an unlabelled vertebra above (e.g. T12): false, outside
    pred[0, 24:28, 16:19] = 3  # a stray blob beside the body: false, inside the range
    scores = volume_metrics(gt, pred)
    assert scores.false_bodies == 2 and scores.false_in_range == 1
    assert scores.outside_ids.tolist() == [2]
