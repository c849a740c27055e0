"""The page against a hostile or careless user: upload names made safe everywhere, user
text shown as text (never Markdown), the loader's warnings shown, no server path in the
browser, and segmentations queued behind the server's slots with the user told."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "app.py"
HOSTILE = "../../![x](http://e/x.png)\n.nii.gz"
# Markdown that would render an image or a link (unescaped "![", "](" or "<http").
LIVE_MARKDOWN = re.compile(r"(?<!\\)!(?<!\\)\[|(?<!\\)\]\(|<https?:")


def start() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    return at


def button(at: AppTest, label: str):
    (found,) = [b for b in at.button if b.label == label]
    return found


def page_sources(at: AppTest) -> list[str]:
    """Every piece of text the page sends as Markdown (or as text)."""
    out = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "text",
                 "subheader", "title"):  # fmt: skip
        out += [str(e.value) for e in getattr(at, kind)]
    for widget in (*at.text_input, *at.button, *at.slider):
        out += [str(widget.label), str(getattr(widget, "help", "") or "")]
    return out


def test_a_hostile_upload_name_is_safe_in_the_page_zip_and_via(model_env, phantom_bytes):
    at = start()
    at.file_uploader[0].upload(HOSTILE, phantom_bytes, "application/gzip")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    volume = at.session_state["volume"]
    assert volume.name == "x_png_"
    button(at, "Segment this slice").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (files,) = at.session_state["files_memo"].values()
    entries = zipfile.ZipFile(io.BytesIO(files["via_zip"][0])).namelist()
    via_names = [v["filename"] for v in json.loads(files["via"][0]).values()]
    for name in [*entries, *via_names, *(f[1] for f in files.values())]:
        assert "/" not in name and "\\" not in name and ".." not in name, name
        assert not set(name) & set("![]()\n"), name
    for text in page_sources(at):
        assert not LIVE_MARKDOWN.search(text), text


def test_a_file_name_on_the_server_is_shown_as_text(tmp_path, monkeypatch, phantom_bytes):
    (tmp_path / "![x](http:__e_x.png).nii.gz").write_bytes(phantom_bytes)
    monkeypatch.setenv("SPINE_DATA_DIR", str(tmp_path))
    at = start()
    at.text_input(key="path_text").input("![x](http:__e_x.png).nii.gz")
    button(at, "Open file").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    for text in page_sources(at):
        assert not LIVE_MARKDOWN.search(text), text


def test_a_typed_path_in_a_refusal_is_shown_as_text(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINE_DATA_DIR", str(tmp_path))
    at = start()
    at.text_input(key="path_text").input("![x](http://e/x.png).nii.gz")
    button(at, "Open file").click()
    at.run()
    assert at.error
    for text in page_sources(at):
        assert not LIVE_MARKDOWN.search(text), text


def nifti(data: np.ndarray) -> bytes:
    return nib.Nifti1Image(data, np.diag([4.0, 1.0, 1.0, 1.0])).to_bytes()


def test_the_loaders_warnings_are_shown(no_data_dir):
    rng = np.random.default_rng(0)
    at = start()
    at.file_uploader[0].upload("four_d.nii", nifti(rng.random((5, 32, 32, 2), np.float32)),
                               "application/octet-stream")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "first 3D volume" in "\n".join(str(w.value) for w in at.warning)
    with_nan = rng.random((5, 32, 32), np.float32)
    with_nan[0, 0, :3] = np.nan
    at.file_uploader[0].upload("nan.nii", nifti(with_nan), "application/octet-stream")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "3 NaN/inf voxels" in "\n".join(str(w.value) for w in at.warning)


def test_no_server_path_reaches_the_page(tmp_path, monkeypatch, phantom_bytes):
    data = tmp_path / "secret_data_folder"
    data.mkdir()
    monkeypatch.setenv("SPINE_DATA_DIR", str(data))
    monkeypatch.setenv("SPINESEG_WEIGHTS", str(tmp_path / "weights_dir" / "absent.weights.h5"))
    at = start()
    at.text_input(key="path_text").input("../elsewhere.nii.gz")
    button(at, "Open file").click()
    at.run()
    refusal = "\n".join(str(e.value) for e in at.error)
    assert "outside the data folder" in refusal
    at.file_uploader[0].upload("small.nii.gz", phantom_bytes, "application/gzip")
    at.run()
    button(at, "Segment this slice").click()
    at.run()
    missing = "\n".join(str(e.value) for e in at.error)
    assert "absent.weights.h5" in missing and "README" in missing
    everything = "\n".join(page_sources(at)) + refusal
    assert str(tmp_path) not in everything and "secret_data_folder" not in everything
    assert "weights_dir" not in everything


def test_a_segmentation_waits_for_a_free_slot(model_env, monkeypatch, phantom_bytes):
    from spine import pipeline

    slots = pipeline.WorkSlots(1)
    monkeypatch.setattr(pipeline, "PAGE_SLOTS", slots)
    told: list[int] = []
    real_slot = slots.slot
    monkeypatch.setattr(slots, "slot", lambda on_wait=None, poll=0.5: real_slot(
        lambda n: (told.append(n), on_wait(n)), poll=0.05))
    at = start()
    at.file_uploader[0].upload("small.nii.gz", phantom_bytes, "application/gzip")
    at.run()
    with slots.slot():  # another session's segmentation holds the only slot
        button(at, "Segment this slice").click()
        runner = threading.Thread(target=at.run)
        runner.start()
        deadline = time.monotonic() + 60
        while not told and time.monotonic() < deadline:
            time.sleep(0.05)
        assert told and told[0] == 1  # "waiting for 1 other segmentation"
        assert not at.session_state["slice_results"]  # nothing ran yet
    runner.join(timeout=120)
    assert not runner.is_alive()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert 2 in at.session_state["slice_results"]
    assert slots.running == 0 and slots.waiting == 0


@pytest.mark.parametrize("value", ["0.0.0.0"])
def test_make_run_binds_localhost_unless_told(value):
    import subprocess

    root = APP.parent
    plain = subprocess.run(["make", "-n", "run"], cwd=root, capture_output=True, text=True)
    told = subprocess.run(["make", "-n", "run", f"HOST={value}"], cwd=root,
                          capture_output=True, text=True)
    assert "--server.address 127.0.0.1" in plain.stdout, plain.stdout
    assert f"--server.address {value}" in told.stdout, told.stdout
