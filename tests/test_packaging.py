"""Packaging: the wheel carries the bundled weights, configs and example scan, and
spine-segment runs from it outside this checkout."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
# What the build needs from the checkout (the wheel is built from a copy, so build/ and
# *.egg-info land in the temporary folder, never in the repository).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "mrcnn", "spine", "weights", "configs",
           "examples")
EXAMPLE = "chu2015_05.nii.gz"


def test_pyproject_lists_every_package_and_maps_the_data_folders():
    code = set(find_packages(str(ROOT), include=["mrcnn", "mrcnn.*", "spine", "spine.*"]))
    mapped = PYPROJECT["package-dir"]
    assert mapped == {"spine.bundled.weights": "weights", "spine.bundled.configs": "configs",
                      "spine.bundled.examples": "examples"}
    assert set(PYPROJECT["packages"]) == code | set(mapped)
    for folder in mapped.values():
        assert (ROOT / folder / "__init__.py").is_file()


def _copy_sources(target: Path) -> None:
    """The files the build reads, without caches or pretrained files copied in by hand."""
    target.mkdir()
    keep_weights = {"spineseg_demo.weights.h5", "README.md", "__init__.py"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        drop = {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
        if Path(folder).name == "weights" and Path(folder).parent == ROOT:
            drop |= {n for n in names if n not in keep_weights}
        return drop

    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, target / name, ignore=ignore)
        else:
            shutil.copy2(src, target / name)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{cmd[:3]}...\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_wheel_installs_and_segments_the_example_outside_the_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SPINESEG_WEIGHTS", "SPINESEG_CONFIG", "VIRTUAL_ENV")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    src, dist, venv, work = (tmp_path / n for n in ("src", "dist", "venv", "work"))
    _copy_sources(src)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(dist), str(src)], env=env, timeout=600)
    (wheel,) = dist.glob("spineseg-*.whl")

    _run([sys.executable, "-m", "venv", str(venv)], env=env, timeout=300)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                      "['purelib'])"], env=env).stdout.strip())
    # The dependencies from the project's venv, as a plain sys.path entry: .pth files in it
    # (the editable install's finder) are not run, so the project comes from the wheel only.
    (site / "deps_from_project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
         env=env, timeout=300)

    work.mkdir()
    probe = _run([str(python), "-c", (
        "import json, sys, spine, mrcnn; from spine import bundled; "
        "print(json.dumps({'spine': spine.__file__, 'mrcnn': mrcnn.__file__, "
        "'examples': str(bundled.examples_dir()), 'weights': str(bundled.demo_weights()), "
        "'finders': [repr(f) for f in sys.meta_path]}))"
    )], cwd=work, env=env).stdout
    where = json.loads(probe)
    for key in ("spine", "mrcnn", "examples", "weights"):
        assert Path(where[key]).is_relative_to(site), (key, where[key])
    assert not any("editable" in finder.lower() for finder in where["finders"])
    example = Path(where["examples"]) / EXAMPLE
    assert example.is_file() and (example.parent / "README.md").is_file()
    assert Path(where["weights"]).stat().st_size > 1_000_000  # the model, not a pointer

    done = _run([str(venv / "bin" / "spine-segment"), str(example), "--out", "out"],
                cwd=work, env=env, timeout=900)
    assert "Traceback" not in done.stderr
    folder = work / "out" / "chu2015_05"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert Path(manifest["model"]["weights"]) == Path(where["weights"])
    labels_img = nib.load(folder / "chu2015_05_vertebrae.nii.gz")
    truth_img = nib.load(example.parent / "chu2015_05_vertebrae.nii.gz")
    np.testing.assert_allclose(labels_img.affine, truth_img.affine, atol=1e-5)
    labels, truth = np.asarray(labels_img.dataobj), np.asarray(truth_img.dataobj)
    # The bundled model on this held-out scan: T11-L5 (labelled) plus S1 (not labelled).
    rows = list(csv.DictReader((folder / "chu2015_05_measurements.csv").open()))
    assert 7 <= len(rows) <= 9 and rows[-1]["level"] == "S1"
    covered = np.count_nonzero((labels > 0) & (truth > 0)) / np.count_nonzero(truth)
    assert covered > 0.8
