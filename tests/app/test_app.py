"""The Streamlit page, driven with streamlit.testing (no browser): every flow a user has.

Segmentation runs the tiny untrained model from conftest.py: these tests check the
plumbing (the page shows masks, tables and downloads, and survives every failure), not
accuracy. Accuracy tests come with the trained model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from spine.pipeline import MEASURE_HELP, SLICE_COLUMNS

APP = Path(__file__).resolve().parents[2] / "app.py"

TIMEOUT = 120  # seconds per run: the first segmentation loads TensorFlow and the model


def start() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    return at


def texts(elements) -> str:
    """The elements' text as the page shows it (Markdown backslash escapes removed)."""
    return re.sub(r"\\(.)", r"\1", "\n".join(str(e.value) for e in elements))


def button(at: AppTest, label: str):
    (found,) = [b for b in at.button if b.label == label]
    return found


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader[0].upload(name, data, "application/gzip")
    return at.run()


def assert_usable(at: AppTest) -> None:
    """No exception reached the page and a scan can still be brought in."""
    assert not at.exception, texts(at.exception)
    assert len(at.file_uploader) == 1
    assert button(at, "Try an example scan")


def with_scan(phantom_bytes: bytes) -> AppTest:
    return upload(start(), "small.nii.gz", phantom_bytes)


# ----------------------------------------------------------------------------- bring a scan
def test_initial_page_says_how_to_start(no_data_dir):
    at = start()
    assert_usable(at)
    assert at.title[0].value == "SpineSeg"
    assert "Try an example scan" in texts(at.info)
    assert not at.error and not at.slider  # nothing to show yet


def test_the_page_says_it_is_for_research_not_for_diagnosis(no_data_dir):
    assert "For research, not for diagnosis" in texts(start().caption)


def test_example_scan_opens_at_the_middle_slice():
    at = start()
    button(at, "Try an example scan").click()
    at.run()
    assert_usable(at)
    volume = at.session_state["volume"]
    assert at.slider(key="slice").value == volume.num_slices // 2
    assert volume.name in texts(at.markdown)
    assert len(at.get("image")) == 1
    assert "Example:" in texts(at.caption)  # says what the example is


def test_upload_of_a_good_scan_shows_its_facts(phantom_bytes):
    at = with_scan(phantom_bytes)
    assert_usable(at)
    assert not at.error
    facts = texts(at.markdown)
    assert "small" in facts and "5 sagittal slices of 64 × 64 px" in facts
    assert "orientation" in facts
    assert at.slider(key="slice").max == 4


def test_upload_of_an_uncompressed_nii_works(phantom_bytes):
    import gzip

    at = upload(start(), "plain.nii", gzip.decompress(phantom_bytes))
    assert_usable(at)
    assert not at.error
    assert "plain" in texts(at.markdown)


def test_upload_of_a_bad_file_is_a_clear_error(no_data_dir):
    at = upload(start(), "broken.nii.gz", b"this is not a scan")
    assert_usable(at)
    assert "gzip" in texts(at.error) or "NIfTI" in texts(at.error)
    assert "Traceback" not in texts(at.error)
    button(at, "Try an example scan").click()  # the page is still usable
    at.run()
    assert not at.error and at.slider(key="slice")


def test_path_inside_the_data_folder_opens(tmp_path, monkeypatch, phantom_bytes):
    (tmp_path / "case.nii.gz").write_bytes(phantom_bytes)
    monkeypatch.setenv("SPINE_DATA_DIR", str(tmp_path))
    at = start()
    at.text_input(key="path_text").input("case.nii.gz")
    button(at, "Open file").click()
    at.run()
    assert_usable(at)
    assert not at.error
    assert "case" in texts(at.markdown)


@pytest.mark.parametrize("text", ["../secret.nii.gz", "/etc/hostname"])
def test_path_outside_the_data_folder_is_refused(tmp_path, monkeypatch, phantom_bytes, text):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "secret.nii.gz").write_bytes(phantom_bytes)
    monkeypatch.setenv("SPINE_DATA_DIR", str(data))
    at = start()
    at.text_input(key="path_text").input(text)
    button(at, "Open file").click()
    at.run()
    assert_usable(at)
    assert "outside the data folder" in texts(at.error)
    assert at.session_state["volume"] is None


def test_any_path_is_refused_without_a_data_folder(no_data_dir, tmp_path, phantom_bytes):
    (tmp_path / "case.nii.gz").write_bytes(phantom_bytes)
    at = start()
    at.text_input(key="path_text").input(str(tmp_path / "case.nii.gz"))
    button(at, "Open file").click()
    at.run()
    assert_usable(at)
    assert "SPINE_DATA_DIR" in texts(at.error)


# ----------------------------------------------------------------------------- see it
def test_slice_slider_and_window_controls_redraw_the_slice(phantom_bytes):
    at = with_scan(phantom_bytes)
    at.slider(key="slice").set_value(0).run()
    assert at.get("image")[0].captions == ["Slice 0 of 5"]
    at.slider(key="percentiles").set_value((5.0, 95.0)).run()
    at.radio(key="contrast").set_value("Window / level").run()
    window = at.slider(key="manual_window")
    window.set_value(window.max / 2).run()
    at.slider(key="manual_level").set_value(at.slider(key="manual_level").min).run()
    assert_usable(at)
    assert not at.error and len(at.get("image")) == 1


# ----------------------------------------------------------------------------- segment
def test_segment_slice_shows_masks_table_and_downloads(model_env, phantom_bytes):
    at = with_scan(phantom_bytes)
    button(at, "Segment this slice").click()
    at.run()
    assert_usable(at)
    assert not at.error, texts(at.error)
    result = at.session_state["slice_results"][2]
    assert result.masks.shape[:2] == (64, 64)
    # The tiny random model finds "vertebrae" anywhere (DETECTION_MIN_CONFIDENCE 0): the
    # table must exist and hold one row per body, in the page's column order.
    assert result.count > 0
    table = at.dataframe[0].value
    assert list(table.columns) == list(SLICE_COLUMNS)
    # The measures are defined where they are shown: score and height say what they are.
    shown = json.loads(at.dataframe[0].proto.columns)
    assert shown["score"]["help"] == MEASURE_HELP["score"]
    assert "not a probability that the level name is right" in shown["score"]["help"]
    assert "area / its anterior-posterior depth" in shown["height_mm"]["help"]
    assert len(table) == result.count
    assert table["level"].tolist() == list(result.levels)
    assert at.subheader[0].value.startswith(f"{result.count} vertebra")
    labels = [b.label for b in at.download_button]
    assert labels == [
        "Overlay (PNG)", "Label map, slice 2 (NIfTI)", "Predictions for VIA (JSON)",
        "VIA project with slice images (ZIP)", "Measurements (CSV)",
    ]


def test_each_vertebra_gets_a_table_row_and_a_legend_entry(model_env, monkeypatch, phantom_bytes):
    """A fixed two-body result (not the random model), so the table is always exercised."""
    import numpy as np

    from spine import pipeline

    def two_bodies(self, volume, index, min_score=0.0):
        masks = np.zeros(volume.data.shape[1:] + (2,), bool)
        masks[10:20, 20:40, 0] = True  # 10 x 20 px
        masks[30:42, 20:40, 1] = True  # 12 x 20 px
        scores = np.array([0.9, 0.8], np.float32)
        return pipeline.build_slice_result(index, masks, scores, volume.spacing[1:])

    monkeypatch.setattr(pipeline.Segmenter, "segment_slice", two_bodies)
    at = with_scan(phantom_bytes)
    button(at, "Segment this slice").click()
    at.run()
    assert not at.error and not at.exception
    table = at.dataframe[0].value
    assert table["level"].tolist() == ["L4", "L5"]
    spacing = at.session_state["volume"].spacing
    assert table["area_mm2"].tolist() == pytest.approx(
        [200 * spacing[1] * spacing[2], 240 * spacing[1] * spacing[2]], abs=0.1
    )
    legend = texts(at.markdown)
    assert "L4" in legend and "L5" in legend
    assert at.subheader[0].value == "2 vertebrae"
    # No S1 evidence: the page says the names are unsure, and so does the table.
    assert table["name_confidence"].tolist() == pytest.approx([0.3, 0.3])
    assert "No S1 found" in texts(at.warning)
    at.selectbox(key="lowest").set_value("S1").run()  # rename without running the model
    renamed = at.dataframe[0].value
    assert renamed["level"].tolist() == ["L5", "S1"]
    assert renamed["name_confidence"].tolist() == [1.0, 1.0]
    assert "set by you" in texts(at.warning)
    assert "counted up from S1 when the model finds it" in texts(at.sidebar.caption)


def test_a_found_s1_names_the_bodies_with_high_confidence(model_env, monkeypatch, phantom_bytes):
    import numpy as np

    from spine import pipeline

    def with_s1(self, volume, index, min_score=0.0):
        masks = np.zeros(volume.data.shape[1:] + (3,), bool)
        for k in range(3):
            masks[5 + 15 * k : 15 + 15 * k, 20:40, k] = True
        scores = np.array([0.9, 0.9, 0.95], np.float32)
        s1 = np.array([0.0, 0.0, 0.95], np.float32)  # the lowest was called S1
        return pipeline.build_slice_result(index, masks, scores, volume.spacing[1:], s1)

    monkeypatch.setattr(pipeline.Segmenter, "segment_slice", with_s1)
    at = with_scan(phantom_bytes)
    button(at, "Segment this slice").click()
    at.run()
    table = at.dataframe[0].value
    assert table["level"].tolist() == ["L4", "L5", "S1"]
    assert table["name_confidence"].tolist() == pytest.approx([0.95] * 3)
    assert not at.warning


def test_a_one_slice_scan_and_a_png_slice_open_without_a_slider(model_env, phantom_bytes):
    import io

    import numpy as np
    from PIL import Image

    image = np.zeros((64, 64), np.uint8)
    image[10:50, 20:40] = 180
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    at = upload(start(), "slice.png", buf.getvalue())
    assert_usable(at)
    assert not at.error and not [s for s in at.slider if s.key == "slice"]
    assert at.session_state["volume"].num_slices == 1
    assert "slice" in texts(at.markdown) and len(at.get("image")) == 1
    button(at, "Segment this slice").click()
    at.run()
    assert not at.exception and not at.error


def test_a_slice_without_a_result_says_so_and_offers_no_downloads(model_env, phantom_bytes):
    at = with_scan(phantom_bytes)
    button(at, "Segment this slice").click()
    at.run()
    at.slider(key="slice").set_value(0).run()
    assert_usable(at)
    assert not at.error
    assert "No segmentation on this slice yet." in texts(at.info)
    assert not at.download_button


def test_overlay_toggles_redraw_without_errors(model_env, phantom_bytes):
    at = with_scan(phantom_bytes)
    button(at, "Segment this slice").click()
    at.run()
    at.slider(key="alpha").set_value(0.0).run()
    at.checkbox(key="boxes").check().run()
    at.checkbox(key="outlines").uncheck().run()
    at.checkbox(key="scores").uncheck().run()
    assert_usable(at)
    assert not at.error and len(at.get("image")) == 1


def test_segment_volume_labels_every_slice(model_env, phantom_bytes):
    at = with_scan(phantom_bytes)
    button(at, "Segment all 5 slices").click()
    at.run()
    assert_usable(at)
    assert not at.error, texts(at.error)
    result = at.session_state["volume_result"]
    assert result.labels.shape == (5, 64, 64)
    assert "Label map, volume (NIfTI)" in [b.label for b in at.download_button]
    at.slider(key="slice").set_value(0).run()  # other slices show the volume result too
    assert "Label map, volume (NIfTI)" in [b.label for b in at.download_button]


def test_the_model_loads_once_per_server(model_env, monkeypatch, phantom_bytes):
    import streamlit as st

    from spine import pipeline

    calls = []
    real = pipeline.load_segmenter
    monkeypatch.setattr(
        pipeline, "load_segmenter", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    st.cache_resource.clear()
    for _ in range(2):  # two sessions, three clicks
        at = with_scan(phantom_bytes)
        button(at, "Segment this slice").click()
        at.run()
        assert not at.error
    button(at, "Segment all 5 slices").click()
    at.run()
    assert len(calls) == 1


def test_missing_weights_are_a_clear_error_and_viewing_still_works(
    tmp_path, monkeypatch, phantom_bytes
):
    monkeypatch.setenv("SPINESEG_WEIGHTS", str(tmp_path / "absent.weights.h5"))
    at = with_scan(phantom_bytes)
    button(at, "Segment this slice").click()
    at.run()
    assert_usable(at)
    message = texts(at.error)
    assert "absent.weights.h5" in message and "spine-train" in message
    at.slider(key="slice").set_value(1).run()
    assert at.get("image")[0].captions == ["Slice 1 of 5"]


def test_out_of_memory_is_a_clear_error(model_env, monkeypatch, phantom_bytes):
    from spine import pipeline

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(pipeline.Segmenter, "segment_volume", exhausted)
    at = with_scan(phantom_bytes)
    button(at, "Segment all 5 slices").click()
    at.run()
    assert_usable(at)
    assert "Out of memory" in texts(at.error)
