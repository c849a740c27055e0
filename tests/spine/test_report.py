"""spine.evaluation.report: tables, plots and REPORT.md written atomically from results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from spine.evaluation import report
from spine.evaluation.metrics import evaluate_slices, slice_detections_from_labels, volume_metrics
from spine.evaluation.run import CaseResult, MethodResult, summarize
from spine.folders import VolumePair


def _result(name: str, shift: int) -> CaseResult:
    """A 3-slice volume with two bodies; the 'model' is the truth shifted by `shift` rows,
    the 'baseline' finds only the upper body."""
    gt = np.zeros((3, 40, 30), np.int32)
    gt[:, 4:14, 8:22], gt[:, 20:30, 8:22] = 1, 2
    model = np.roll(gt, shift, axis=1)
    base = np.where(gt == 1, 1, 0)
    case = VolumePair(name, Path(f"{name}.nii.gz"), Path(f"{name}_vertebrae.nii.gz"))
    out = CaseResult(case, gt, np.random.default_rng(0).random(gt.shape, np.float32),
                     (4.0, 1.0, 1.0), ["L4", "L5"])
    for method, labels in (("model", model), ("baseline", base)):
        out.methods[method] = MethodResult(
            labels, volume_metrics(gt, labels, ["L4", "L5"]),
            evaluate_slices(gt, slice_detections_from_labels(labels)), 0.5)
    return out


@pytest.fixture()
def results():
    return [_result("chu2015_01", 0), _result("myosegmentum_02", 3)]


def test_write_outputs_writes_every_file(results, tmp_path):
    report.write_outputs(results, summarize(results, {"data": "x"}), tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"metrics.json", "per_volume.csv", "per_body.csv", "REPORT.md",
                     "pr_curve.png", "dice_per_body.png", "dice_per_source.png",
                     "best_chu2015_01.png", "worst_myosegmentum_02.png"}
    for name in names:
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "pr_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_metrics_json_holds_the_summary_numbers(results, tmp_path):
    report.write_outputs(results, summarize(results), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["methods"]["model"]["per_source"]["chu2015"]["mean_dice"] == 1.0
    assert metrics["methods"]["baseline"]["recall"] == 0.5  # upper bodies only
    assert metrics["methods"]["baseline"]["per_level"]["L5"]["mean_dice"] == 0.0


def test_per_body_csv_has_one_row_per_body_and_method(results, tmp_path):
    report.write_outputs(results, summarize(results), tmp_path)
    with (tmp_path / "per_body.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 2 * 2  # volumes x methods x bodies
    assert {r["level"] for r in rows} == {"L4", "L5"}


def test_report_cites_the_real_data_sources(results, tmp_path):
    report.write_outputs(results, summarize(results), tmp_path)
    text = (tmp_path / "REPORT.md").read_text()
    assert "| model | 0.8" in text  # mean of 1.0 and the shifted volume
    assert "Chu C. et al." in text and "Burian E. et al." in text
    assert "![best](best_chu2015_01.png)" in text


def test_overlay_panel_shows_image_truth_and_each_method(results):
    panel = report.overlay_panel(results[0])
    assert panel.dtype == np.uint8 and panel.shape == (40, 30 * 4, 3)


def test_names_are_summarised_by_whether_the_page_showed_them_as_sure(results, tmp_path):
    # Volume 1: both bodies named right, names shown as sure; volume 2: one body misnamed,
    # with a name marked unsure. A third volume: misnamed while every name looked sure.
    third = _result("chu2015_03", 0)
    results[0].methods["model"].named = np.array([True, True])
    results[1].methods["model"].named = np.array([True, False])
    results[1].methods["model"].names_unsure = True
    third.methods["model"].named = np.array([False, False])
    summary = summarize([*results, third])
    model = summary["methods"]["model"]
    assert model["named_right"] == pytest.approx(3 / 6)
    assert model["volumes_fully_named"] == pytest.approx(1 / 3)
    assert model["volumes_names_unsure"] == pytest.approx(1 / 3)
    assert model["fully_named_when_sure"] == pytest.approx(1 / 2)
    assert model["fully_named_when_unsure"] == 0.0
    assert "named_right" not in summary["methods"]["baseline"]  # no names: no figures
    report.write_outputs([*results, third], summary, tmp_path)
    text = (tmp_path / "REPORT.md").read_text()
    assert "## Level names" in text and "| model | 0.500 | 0.333 | 0.333 | 0.500 | 0.000 |" in text
