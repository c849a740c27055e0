"""Smoke test of the benchmark scripts: they run end to end on a tiny size and write their
JSON and Markdown. No timing is asserted (benchmarks are scripts, not tests)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The quick run of every benchmark script takes ~20 s on the 2-core CPU: slow, still in CI.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m benchmarks.run_all --quick` (TF backend only) into a temporary folder."""
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--quick", "--out", str(out),
         "--backends", "tensorflow"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return out


def test_run_all_writes_results_markdown_with_every_section(quick_run: Path) -> None:
    text = (quick_run / "RESULTS.md").read_text()
    for heading in ("## Machine", "## Inference latency per slice", "## The machine's floor",
                    "## End to end", "## Commands"):
        assert heading in text


def test_latency_json_has_ours_timings_per_case(quick_run: Path) -> None:
    data = json.loads((quick_run / "results" / "latency.json").read_text())
    assert [(c["size"], c["batch"]) for c in data["cases"]] == [(128, 1), (128, 2)]
    for case in data["cases"]:
        assert case["per_slice_s"]["ours"] > 0
        assert case["detections"]["ours"] == [100] * case["batch"]
        assert case["pre_nms_limit"] == 2020  # torchvision's per-level top-1000, summed


def test_torchvision_column_is_skipped_with_a_note_without_torch(quick_run: Path) -> None:
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here: the column is measured, not skipped")
    data = json.loads((quick_run / "results" / "latency.json").read_text())
    assert all("torchvision" not in c["per_slice_s"] for c in data["cases"])
    assert all("not installed" in c["torchvision_note"] for c in data["cases"])
    assert "torchvision column skipped" in (quick_run / "RESULTS.md").read_text()


def test_floor_json_has_rates_and_model_macs(quick_run: Path) -> None:
    data = json.loads((quick_run / "results" / "floor.json").read_text())
    assert data["matmul_gflops"]["numpy"]["best"] > 0
    assert data["copy_gbps"]["best"] > 0
    macs = data["model_macs"][0]["ours"]
    assert set(macs) == {"trunk", "fpn", "rpn", "box_head", "mask_head", "total"}
    assert macs["total"] == sum(v for k, v in macs.items() if k != "total")


def test_end_to_end_json_has_slice_rate_and_peak_memory(quick_run: Path) -> None:
    data = json.loads((quick_run / "results" / "end_to_end.json").read_text())
    assert data["warm"]["slices"] == 3
    assert data["warm"]["slices_per_s"] > 0
    assert data["peak_rss_mib"] > 0
    assert set(data["tracemalloc_peak_mib"]) == {"load_volume", "segment_volume", "write_nifti"}


def test_isolated_step_runs_or_says_why_it_skipped(quick_run: Path) -> None:
    data = json.loads((quick_run / "results" / "isolated.json").read_text())
    text = (quick_run / "RESULTS.md").read_text()
    assert "### Each model alone in its own process" in text
    if importlib.util.find_spec("torchvision") is None:
        assert data == {"skipped": "torch/torchvision not installed"}
        assert "(torch/torchvision not installed)" in text
    else:
        (case,) = data["cases"]
        assert case["ratio"] > 0 and len(case["times_s"]["ours"]) == 1
