"""The bundled model (weights/spineseg_demo.weights.h5) on real scans it never trained on.

These are accuracy tests: they run the shipped weights through the same pipeline as the app.
"""

from pathlib import Path

import pytest

from spine.evaluate import main as evaluate_main
from spine.evaluate import volume_metrics
from spine.phantom import make_phantom
from spine.pipeline import DEFAULT_CONFIG, DEFAULT_WEIGHTS, load_segmenter
from spine.volume import load_label_map, load_volume

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "chu2015_05.nii.gz"
EXAMPLE_LABELS = ROOT / "examples" / "chu2015_05_vertebrae.nii.gz"
REAL = ROOT.parent / "shared" / "data" / "real"

pytestmark = pytest.mark.skipif(
    not DEFAULT_WEIGHTS.is_file(), reason=f"bundled weights not found at {DEFAULT_WEIGHTS}"
)


@pytest.fixture(scope="module")
def segmenter():
    return load_segmenter(DEFAULT_WEIGHTS, DEFAULT_CONFIG)


def test_bundled_model_segments_the_example_scan(segmenter):
    volume = load_volume(EXAMPLE)
    truth = load_label_map(EXAMPLE_LABELS, like=volume)
    result = segmenter.segment_volume(volume)
    scores = volume_metrics(truth, result.labels)
    assert scores.recall == 1.0  # all 7 bodies (T11-L5) found
    assert scores.mean_dice >= 0.88, f"mean Dice {scores.mean_dice:.3f}"  # measured: 0.924


# Seeds 1000.. are the held-out evaluation phantoms (training used seeds 0-39).
@pytest.mark.parametrize("seed", [1000, 1001, 1002])
def test_bundled_model_segments_held_out_phantoms(segmenter, tmp_path, seed):
    make_phantom(seed, name="held_out").save(tmp_path)
    volume = load_volume(tmp_path / "held_out.nii.gz")
    truth = load_label_map(tmp_path / "held_out_vertebrae.nii.gz", like=volume)
    scores = volume_metrics(truth, segmenter.segment_volume(volume).labels)
    assert scores.recall >= 0.9, f"recall {scores.recall:.3f}"  # measured: 1.0 on all three
    assert scores.mean_dice >= 0.90, f"mean Dice {scores.mean_dice:.3f}"  # measured: 0.944-0.962


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real data not found at {REAL}")
def test_spine_evaluate_runs_end_to_end_on_two_real_volumes(tmp_path, segmenter):
    split = tmp_path / "split.json"
    split.write_text('{"train": [], "val": ["chu2015_06", "myosegmentum_06"]}')
    out = tmp_path / "report"
    code = evaluate_main([
        "--data", str(REAL), "--split", str(split), "--subset", "val", "--out", str(out),
        "--no-progress",
    ])
    assert code == 0
    assert (out / "REPORT.md").is_file() and (out / "metrics.json").is_file()
    per_volume = (out / "per_volume.csv").read_text().splitlines()
    assert len(per_volume) == 1 + 2 * 2  # header + (model, baseline) per volume
