"""spine-segment: scans in, label maps + VIA JSON + measurements CSV out; bad files reported.

The network is replaced by an oracle that returns each phantom's true bodies, so the files
written can be compared with the truth voxel for voxel.
"""

from __future__ import annotations

import csv
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spine import pipeline, segment, via
from spine.phantom import make_phantom
from spine.volume import load_volume, save_nifti


class Oracle:
    """model.detect for known scans: the true bodies of whichever slice it is shown."""

    def __init__(self, scans: list[tuple[Path, Path]]) -> None:
        self.lookup = {}
        for image, labels in scans:
            volume = load_volume(image)
            truth = volume.load_label_map(labels)
            stack = pipeline.model_stack(volume)
            for i in range(volume.num_slices):
                self.lookup[stack[i].tobytes()] = truth[i]

    def detect(self, images, verbose=0):
        out = []
        for image in images:
            labels = self.lookup[np.ascontiguousarray(image[..., 0]).tobytes()]
            ids = np.unique(labels)[1:]
            masks = labels[..., None] == ids[None, None, :]
            out.append({"masks": masks, "scores": np.full(len(ids), 0.9, np.float32),
                        "rois": pipeline.boxes_from_masks(masks),
                        "class_ids": np.ones(len(ids), np.int32)})  # fmt: skip
        return out


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
    segmenter = pipeline.Segmenter(Oracle(scans), config=None)
    monkeypatch.setattr(pipeline, "load_segmenter", lambda weights=None, config=None: segmenter)
    return segmenter


def test_folder_in_label_maps_csv_and_via_out(oracle, scans, tmp_path):
    out = tmp_path / "out"
    assert segment.main([str(scans[0][0].parent), "--out", str(out)]) == 0
    for image, truth_path in scans:
        name = image.name.removesuffix(".nii.gz")
        written = nib.load(out / f"{name}_vertebrae.nii.gz")
        truth = nib.load(truth_path)
        np.testing.assert_allclose(written.affine, truth.affine)
        np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(truth.dataobj))

        rows = list(csv.DictReader((out / f"{name}_measurements.csv").open()))
        assert len(rows) == int(np.asarray(truth.dataobj).max())
        assert set(rows[0]) >= {"level", "score", "volume_mm3", "height_mm"}

        images = via.read_via(out / f"{name}_via.json")
        assert images, "one VIA image per slice with vertebrae"
        for entry in images:
            png = out / f"{name}_slices" / entry.filename
            assert png.stat().st_size == entry.size  # VIA's key: file name + size


def test_label_maps_in_the_folder_are_not_taken_for_scans(scans):
    found = segment.find_scans([scans[0][0].parent])
    assert sorted(p.name for p in found) == sorted(image.name for image, _ in scans)


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
    assert (tmp_path / f"{name}_vertebrae.nii.gz").is_file()
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


def test_console_script_is_declared():
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert scripts["spine-segment"] == "spine.segment:main"


def test_outputs_are_written_for_a_scan_given_as_a_file(oracle, scans, tmp_path):
    image, _ = scans[1]
    save_nifti(nib.load(image), tmp_path / "copy.nii")  # uncompressed .nii works too
    assert segment.main([str(tmp_path / "copy.nii"), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "copy_vertebrae.nii.gz").is_file()


def test_an_output_path_that_is_a_file_is_an_error(oracle, scans, tmp_path, capsys):
    clash = tmp_path / "taken"
    clash.write_text("a file")
    assert segment.main([str(scans[0][0]), "--out", str(clash)]) == 2
    err = capsys.readouterr().err
    assert "cannot create the output folder" in err and "Traceback" not in err


def test_lowest_renames_the_bodies(oracle, scans, tmp_path):
    assert segment.main([str(scans[0][0]), "--out", str(tmp_path), "--lowest", "S1"]) == 0
    name = scans[0][0].name.removesuffix(".nii.gz")
    rows = list(csv.DictReader((tmp_path / f"{name}_measurements.csv").open()))
    assert rows[-1]["level"] == "S1"


def test_the_command_exits_2_without_a_traceback(tmp_path):
    """As users run it: a separate process, missing weights, nothing but a message."""
    import subprocess
    import sys

    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"not used: the weights are checked first")
    done = subprocess.run(
        [sys.executable, "-m", "spine.segment", str(scan), "--weights", str(tmp_path / "no.h5")],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Model weights not found" in done.stderr and "Traceback" not in done.stderr
