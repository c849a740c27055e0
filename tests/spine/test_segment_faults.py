"""spine-segment killed with SIGKILL at random points, then run again: every result set
that is there is whole (its manifest's checksums match), the final sets equal those of a
run that was never killed, and no temporary file survives (issue 14, "a fault test")."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spine import segment
from spine.phantom import make_phantom

SCRIPT = Path(__file__).with_name("oracle_segment.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scan_folder(tmp_path_factory) -> Path:
    """Three small phantoms, two of them in one subject folder layout's worth of slices."""
    folder = tmp_path_factory.mktemp("faults")
    for seed in (31, 32, 33):
        make_phantom(seed, size=64, num_slices=6, name=f"scan_{seed}").save(folder)
    return folder


def start(scan_folder: Path, out: Path) -> subprocess.Popen:
    """spine-segment on the folder in its own process, returned once it is set to write."""
    # The Oracle needs no TensorFlow: the numpy backend keeps each start-up to a second.
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    run = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(scan_folder), "--", str(scan_folder), "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert run.stdout.readline().strip() == "ready", run.stderr.read()
    return run


def result_sets(out: Path) -> dict[str, dict[str, str]]:
    """{result folder: {file: sha256}} of every visible result folder, each checked whole
    against its manifest (a folder without one is a half-written set: a failure)."""
    sets = {}
    for folder in sorted(p for p in out.iterdir() if not p.name.startswith(".")):
        manifest = json.loads((folder / segment.MANIFEST).read_text())
        listed = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
        on_disk = {
            p.relative_to(folder).as_posix(): segment.sha256(p)
            for p in folder.rglob("*")
            if p.is_file() and p.name != segment.MANIFEST
        }
        assert on_disk == listed, f"{folder} does not match its manifest"
        sets[folder.name] = listed
    return sets


def leftovers(out: Path) -> list[Path]:
    """Temporary files and folders anywhere under out (every writer's names start with .)."""
    return sorted(out.rglob(".*"))


@pytest.mark.slow
def test_killed_runs_leave_whole_sets_and_a_rerun_matches_an_uninterrupted_run(
    scan_folder, tmp_path
):
    clean = tmp_path / "clean"
    run = start(scan_folder, clean)
    began = time.monotonic()
    assert run.wait(timeout=120) == 0, run.stderr.read()
    duration = time.monotonic() - began  # reading, segmenting and writing the three sets
    expected = result_sets(clean)
    assert len(expected) == 3 and not leftovers(clean)

    out = tmp_path / "out"
    rng = random.Random(14)
    kills = 0
    for _ in range(8):  # each kill lands somewhere between start-up and the last rename
        run = start(scan_folder, out)
        time.sleep(rng.uniform(0.0, 1.0) * duration)
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
            kills += 1
        run.wait(timeout=120)
        if out.exists():
            sets = result_sets(out)  # whatever is visible is whole
            for name, files in sets.items():
                assert files == expected[name]
    assert kills >= 4, "the runs finished before they could be killed"

    final = start(scan_folder, out)
    assert final.wait(timeout=120) == 0, final.stderr.read()
    assert result_sets(out) == expected
    assert leftovers(out) == []
    assert sorted(os.listdir(out)) == sorted(os.listdir(clean))
