"""spine-segment: scans in, label maps + VIA JSON + measurements CSV out; bad files reported.

The network is replaced by an oracle that returns each phantom's true bodies, so the files
written can be compared with the truth voxel for voxel.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from oracle import OracleModel

from spine import export, pipeline, segment, via
from spine.phantom import make_phantom
from spine.volume import load_volume, save_nifti


def scan_oracle(scans: list[tuple[Path, Path]]) -> OracleModel:
    """The oracle for (scan, label map) files."""
    pairs = []
    for image, labels in scans:
        volume = load_volume(image)
        pairs.append((volume, volume.load_label_map(labels)))
    return OracleModel(pairs)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> list[tuple[Path, Path]]:
    """Two small phantoms in one folder, each with its label map NAME_vertebrae.nii.gz."""
    folder = tmp_path_factory.mktemp("scans")
    pairs = []
    for seed, orientation in ((21, "LPS"), (22, "PIR")):
        phantom = make_phantom(seed, size=64, num_slices=4, orientation=orientation)
        pairs.append(tuple(phantom.save(folder)[:2]))
    return pairs


@pytest.fixture()
def oracle(scans, monkeypatch):
    segmenter = pipeline.Segmenter(scan_oracle(scans), config=None)
    monkeypatch.setattr(pipeline, "load_segmenter", lambda weights=None, config=None: segmenter)
    return segmenter


def test_folder_in_label_maps_csv_and_via_out(oracle, scans, tmp_path):
    out = tmp_path / "out"
    assert segment.main([str(scans[0][0].parent), "--out", str(out)]) == 0
    for image, truth_path in scans:
        name = image.name.removesuffix(".nii.gz")
        written = nib.load(out / name / f"{name}_vertebrae.nii.gz")
        truth = nib.load(truth_path)
        np.testing.assert_allclose(written.affine, truth.affine)
        np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(truth.dataobj))

        rows = list(csv.DictReader((out / name / f"{name}_measurements.csv").open()))
        assert len(rows) == int(np.asarray(truth.dataobj).max())
        assert set(rows[0]) >= {"level", "score", "volume_mm3", "height_mm"}

        images = via.read_via(out / name / f"{name}_via.json")
        assert images, "one VIA image per slice with vertebrae"
        for entry in images:
            png = out / name / f"{name}_slices" / entry.filename
            assert png.stat().st_size == entry.size  # VIA's key: file name + size


def test_label_maps_in_the_folder_are_not_taken_for_scans(scans):
    found = segment.find_scans([scans[0][0].parent])
    assert sorted(p.name for p in found) == sorted(image.name for image, _ in scans)


@pytest.mark.parametrize(
    ("name", "stem"),
    [("t2.nii.gz", "t2"), ("t2.nii", "t2"), ("study.zip", "study"), ("x.dcm", "x"),
     ("series.v2", "series.v2"), ("X.DCM", "X.DCM"), (".nii.gz", ".nii.gz"), (".zip", ".zip")],
)  # fmt: skip
def test_a_result_folder_is_named_after_the_scan_without_its_suffix(name, stem):
    assert segment.scan_stem(Path("data") / name) == stem


def test_a_bad_file_is_reported_and_the_others_are_done(oracle, scans, tmp_path, capsys):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    missing = tmp_path / "missing.nii.gz"
    status = segment.main([str(bad), str(scans[0][0]), str(missing), "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 2
    assert "broken.nii.gz" in err and "gzip" in err
    assert "missing.nii.gz" in err and "No such file" in err
    assert "Traceback" not in err
    name = scans[0][0].name.removesuffix(".nii.gz")
    # mirrored below the inputs' common folder, which holds tmp_path and the scans' folder
    assert (tmp_path / scans[0][0].parent.name / name / f"{name}_vertebrae.nii.gz").is_file()
    assert "1 of 3 scans segmented" in out


def test_missing_weights_exit_2_with_the_message(tmp_path, capsys, scans):
    status = segment.main(
        [str(scans[0][0]), "--weights", str(tmp_path / "none.weights.h5"), "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "none.weights.h5" in err and "spine-train" in err and "Traceback" not in err


def test_a_folder_without_scans_is_an_error(tmp_path, capsys):
    assert segment.main([str(tmp_path)]) == 2
    assert "no .nii or .nii.gz scans" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["spine-segment", "spine-evaluate"])
def test_the_installed_console_script_runs(command):
    """The entry point as installed (not pyproject.toml's text): it starts and shows usage."""
    script = Path(sys.executable).parent / command
    if not script.is_file():
        pytest.skip(f"{command} is not installed beside {sys.executable} (pip install -e .)")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {command} ")


def test_outputs_are_written_for_a_scan_given_as_a_file(oracle, scans, tmp_path):
    image, _ = scans[1]
    save_nifti(nib.load(image), tmp_path / "copy.nii")  # uncompressed .nii works too
    assert segment.main([str(tmp_path / "copy.nii"), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "copy" / "copy_vertebrae.nii.gz").is_file()


def test_an_output_path_that_is_a_file_is_an_error(oracle, scans, tmp_path, capsys):
    clash = tmp_path / "taken"
    clash.write_text("a file")
    assert segment.main([str(scans[0][0]), "--out", str(clash)]) == 2
    err = capsys.readouterr().err
    assert "cannot create the output folder" in err and "Traceback" not in err


def test_lowest_renames_the_bodies(oracle, scans, tmp_path):
    assert segment.main([str(scans[0][0]), "--out", str(tmp_path), "--lowest", "S1"]) == 0
    name = scans[0][0].name.removesuffix(".nii.gz")
    rows = list(csv.DictReader((tmp_path / name / f"{name}_measurements.csv").open()))
    assert rows[-1]["level"] == "S1"


def test_the_command_exits_2_without_a_traceback(tmp_path):
    """As users run it: a separate process, missing weights, nothing but a message."""
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"not used: the weights are checked first")
    done = subprocess.run(
        [sys.executable, "-m", "spine.segment", str(scan), "--weights", str(tmp_path / "no.h5")],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Model weights not found" in done.stderr and "Traceback" not in done.stderr


# ----------------------------------------------------------------------------- result sets
def stem(path: Path) -> str:
    return path.name.removesuffix(".nii.gz").removesuffix(".nii")


def hidden(out: Path) -> list[Path]:
    """Everything under out whose name starts with a dot: temporary files and folders."""
    return [p for p in out.rglob(".*")]


def assert_complete_set(folder: Path, scan: Path, truth_path: Path) -> dict:
    """folder holds the whole result set of scan: label map equal to the truth, one slice
    PNG per VIA image and nothing else, a manifest whose checksums match every file."""
    name = stem(scan)
    written = nib.load(folder / f"{name}_vertebrae.nii.gz")
    np.testing.assert_array_equal(
        np.asarray(written.dataobj), np.asarray(nib.load(truth_path).dataobj)
    )
    entries = via.read_via(folder / f"{name}_via.json")
    pngs = sorted(p.name for p in (folder / f"{name}_slices").iterdir())
    assert pngs == sorted(e.filename for e in entries)
    manifest = json.loads((folder / "manifest.json").read_text())
    files = {f["path"]: f for f in manifest["files"]}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(files) == on_disk - {"manifest.json"}
    for rel, entry in files.items():
        data = (folder / rel).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert manifest["inputs"] == [
        {"path": os.path.abspath(scan), "sha256": hashlib.sha256(scan.read_bytes()).hexdigest()}
    ]
    assert set(manifest["packages"]) >= {"numpy", "nibabel", "keras"}
    assert manifest["packages"]["numpy"] == np.__version__
    assert set(manifest["model"]) == {"weights", "config", "config_name"}
    return manifest


@pytest.mark.parametrize("as_files", [False, True], ids=["folders", "files"])
def test_the_same_name_in_two_folders_gives_two_complete_sets(
    oracle, scans, tmp_path, capsys, as_files
):
    """dup/a/x.nii.gz and dup/b/x.nii.gz (different scans) -> out/a/x/ and out/b/x/."""
    for sub, (image, _) in zip("ab", scans, strict=True):
        (tmp_path / "dup" / sub).mkdir(parents=True)
        shutil.copy(image, tmp_path / "dup" / sub / "x.nii.gz")
    inputs = [tmp_path / "dup" / sub / ("x.nii.gz" if as_files else "") for sub in "ab"]
    out = tmp_path / "out"
    assert segment.main([*map(str, inputs), "--out", str(out)]) == 0
    assert "2 of 2 scans segmented" in capsys.readouterr().out
    for sub, (_, truth) in zip("ab", scans, strict=True):
        assert_complete_set(out / sub / "x", tmp_path / "dup" / sub / "x.nii.gz", truth)
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]


def test_scans_that_would_share_a_folder_are_told_apart_and_said_so(
    oracle, scans, tmp_path, capsys
):
    """x.nii beside x.nii.gz: the second goes to x-2/, and a note says so."""
    save_nifti(nib.load(scans[0][0]), tmp_path / "in" / "x.nii")
    shutil.copy(scans[1][0], tmp_path / "in" / "x.nii.gz")
    out = tmp_path / "out"
    assert segment.main([str(tmp_path / "in"), "--out", str(out)]) == 0
    assert "x-2" in capsys.readouterr().err
    assert_complete_set(out / "x", tmp_path / "in" / "x.nii", scans[0][1])
    assert_complete_set(out / "x-2", tmp_path / "in" / "x.nii.gz", scans[1][1])


def test_result_folders_never_share_or_nest(tmp_path):
    data = tmp_path / "data"
    plan = segment.result_dirs(
        [data / "sub01.nii.gz", data / "sub01" / "t2.nii.gz", data / "sub02" / "t2.nii",
         data / "sub02" / "T2.nii.gz", data / "sub01.nii.gz"],
        tmp_path / "out",
    )  # fmt: skip
    rel = [target.relative_to(tmp_path / "out").as_posix() for _, target in plan]
    assert rel == ["sub01-2", "sub01/t2", "sub02/t2", "sub02/T2-2"]  # the repeat is done once


def test_a_rerun_replaces_the_set_whole(oracle, scans, tmp_path):
    image, truth = scans[0]
    out, name = tmp_path / "out", stem(image)
    assert segment.main([str(image), "--out", str(out)]) == 0
    stale = [out / name / f"{name}_slices" / f"{name}_s099.png", out / name / "notes.txt"]
    for path in stale:
        path.write_bytes(b"from an earlier run")
    assert segment.main([str(image), "--out", str(out)]) == 0
    assert not any(path.exists() for path in stale)
    assert_complete_set(out / name, image, truth)
    assert hidden(out) == []


def test_a_failure_mid_set_leaves_no_temp_files_and_the_old_set_whole(
    oracle, scans, tmp_path, monkeypatch, capsys
):
    image, truth = scans[0]
    out, name = tmp_path / "out", stem(image)
    assert segment.main([str(image), "--out", str(out)]) == 0
    before = (out / name / "manifest.json").read_text()

    def fail(*args, **kwargs):  # after the label map, slices and VIA JSON are written
        raise OSError("No space left on device")

    monkeypatch.setattr(export, "measurements_csv", fail)
    other = tmp_path / "other.nii.gz"
    shutil.copy(scans[1][0], other)
    assert segment.main([str(image), str(other), "--out", str(out / "again")]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert hidden(out) == []
    assert list((out / "again").iterdir()) == []  # no half-written set
    assert (out / name / "manifest.json").read_text() == before
    assert_complete_set(out / name, image, truth)


def test_an_interrupt_mid_set_leaves_no_temp_files(oracle, scans, tmp_path, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "measurements_csv", interrupt)
    out = tmp_path / "out"
    try:
        status = segment.main([str(scans[0][0]), "--out", str(out)])
    except KeyboardInterrupt:
        status = "KeyboardInterrupt escaped"
    assert status == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_leftovers_of_a_killed_run_are_removed_at_the_next_start(oracle, scans, tmp_path):
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    killed = out / f"{segment.TEMP_PREFIX}{host}-{dead.pid}-abc123"
    live = out / f"{segment.TEMP_PREFIX}{host}-{os.getppid()}-def456"  # a run still going
    elsewhere = out / f"{segment.TEMP_PREFIX}other-host-4242-ghi789"  # can't tell: keep a day
    ancient = out / f"{segment.TEMP_PREFIX}other-host-4243-jkl012"
    for folder in (killed, live, elsewhere, ancient):
        (folder / "x_slices").mkdir(parents=True)
        (folder / "x_slices" / ".x_s001.abc.png").write_bytes(b"half")
    os.utime(ancient, (0, 0))
    assert segment.main([str(scans[0][0]), "--out", str(out)]) == 0
    assert not killed.exists() and not ancient.exists()
    assert live.exists() and elsewhere.exists()


def test_a_folder_in_the_way_is_not_replaced(oracle, scans, tmp_path, capsys):
    image = scans[0][0]
    mine = tmp_path / "out" / stem(image) / "mine.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("not spine-segment's")
    assert segment.main([str(image), "--out", str(tmp_path / "out")]) == 2
    assert "not a spine-segment result folder" in capsys.readouterr().err
    assert [p.name for p in mine.parent.iterdir()] == ["mine.txt"]
    assert hidden(tmp_path / "out") == []


def test_a_set_is_not_written_inside_an_earlier_one(oracle, scans, tmp_path, capsys):
    """data/sub01.nii.gz made out/sub01/; out/sub01/t2/ in it would go when that is redone."""
    data, out = tmp_path / "data", tmp_path / "out"
    for path, (image, _) in zip(["sub01.nii.gz", "sub01/t2.nii.gz"], scans, strict=True):
        (data / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, data / path)
    shutil.copy(scans[1][0], data / "sub02.nii.gz")
    assert segment.main([str(data / "sub01.nii.gz"), "--out", str(out)]) == 0
    status = segment.main([str(data / "sub01/t2.nii.gz"), str(data / "sub02.nii.gz"),
                           "--out", str(out)])  # fmt: skip
    assert status == 2
    assert "inside the result folder" in capsys.readouterr().err
    assert not (out / "sub01" / "t2").exists() and (out / "sub02" / "manifest.json").is_file()
    assert_complete_set(out / "sub01", data / "sub01.nii.gz", scans[0][1])


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_file_modes_follow_the_umask(oracle, scans, tmp_path, umask_027):
    out = tmp_path / "out"
    assert segment.main([str(scans[0][0]), "--out", str(out)]) == 0
    paths = list(out.rglob("*"))
    assert any(p.suffix == ".png" for p in paths) and any(p.name.endswith(".nii.gz") for p in paths)
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o750 if path.is_dir() else 0o640), (path, oct(mode))
