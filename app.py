"""SpineSeg: upload a sagittal spine MRI, see every vertebra, take the results away.

Run with `streamlit run app.py`. This file holds layout, widgets and caching only; the
work is done by spine.pipeline (segmentation) and spine.export (pictures and files).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import streamlit as st

from spine import export, inputs, memory, pipeline
from spine.config import WINDOW_PERCENTILES
from spine.errors import MissingWeightsError, SpineInputError
from spine.levels import SPINE_LEVELS
from spine.names import safe_filename
from spine.volume import load_scan, load_volume, sagittal_problem

logger = logging.getLogger("spineseg.app")

st.set_page_config(page_title="SpineSeg", page_icon=":bone:", layout="wide")
state = st.session_state
EXAMPLE = "the example scan"
LEVELS = SPINE_LEVELS  # names a user can give the lowest vertebra found
AUTOMATIC = "automatic (from S1)"  # names from the model's evidence, no override
RESEARCH_ONLY = ("For research, not for diagnosis: a research tool, not a medical device; "
                 "have every result checked by a qualified reader.")
# Headers and number formats of the measurement tables (keys as in *.measurements()).
COLUMNS = {
    "level": st.column_config.TextColumn("Level"),
    "name_confidence": st.column_config.NumberColumn(
        "Name conf.", format="%.2f",
        help="How sure the level name is: high when counted up from a found S1 with "
        "regular spacing, low (0.3) when no S1 is in view.",
    ),
    "score": st.column_config.NumberColumn(
        "Score", format="%.2f", help=pipeline.MEASURE_HELP["score"]
    ),
    "area_mm2": st.column_config.NumberColumn(
        "Area (mm²)", format="%.0f", help=pipeline.MEASURE_HELP["area_mm2"]
    ),
    "height_mm": st.column_config.NumberColumn(
        "Height (mm)", format="%.1f", help=pipeline.MEASURE_HELP["height_mm"]
    ),
    "volume_mm3": st.column_config.NumberColumn(
        "Volume (mm³)", format="%.0f", help=pipeline.MEASURE_HELP["volume_mm3"]
    ),
    "slices": st.column_config.NumberColumn("Slices"),
    "name_note": st.column_config.TextColumn("Naming"),
}


# ----------------------------------------------------------------------------- model
@st.cache_resource
def memory_trimmer() -> Any:
    """Once per server, before the model loads: fixed malloc thresholds, and a thread that
    returns memory freed by closed sessions to the system (spine.memory)."""
    memory.fix_malloc_thresholds()
    return memory.start_trimmer(interval_s=30.0)


@st.cache_resource(show_spinner="Loading the model (once per server)...")
def cached_segmenter(weights: str, config: str, stamp: float) -> pipeline.Segmenter:
    """One model per server process; `stamp` (the file's mtime) reloads changed weights."""
    return pipeline.load_segmenter(weights, config)


def get_segmenter() -> pipeline.Segmenter:
    weights, config = pipeline.resolve_model_paths()
    if not weights.is_file():  # fail before touching the cache, with the pipeline's message
        return pipeline.load_segmenter(weights, config)
    return cached_segmenter(str(weights), str(config), weights.stat().st_mtime)


def guarded(action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run fn; any failure ends in st.error (never a traceback) and returns None."""
    try:
        return fn(*args, **kwargs)
    except MissingWeightsError as exc:  # its message names server paths: say it without them
        logger.warning("model unavailable: %s", exc)
        st.error(model_problem())
    except SpineInputError as exc:
        st.error(inputs.plain(str(exc)))
    except MemoryError:
        st.error(
            f"Out of memory while {action}. Try a smaller scan, or segment one slice at a time."
        )
    except Exception as exc:  # the page must stay usable whatever happens
        logger.exception("failed while %s", action)  # the details (paths too) stay in the log
        st.error(f"Something went wrong while {action} ({type(exc).__name__}); the server's "
                 "log has the details.")
    return None


def model_problem() -> str:
    """Why segmenting is off, for the page: file names only, never a server path."""
    weights, _ = pipeline.resolve_model_paths()
    if not weights.is_file():
        return (f"The model weights file {weights.name} is missing on this server, so segmenting "
                "is off (viewing works). See README: install the bundled weights file, or "
                "train a model with `spine-train` and point SPINESEG_WEIGHTS at it.")
    return (f"The model weights {weights.name} could not be loaded with their config (see "
            "README: the config must be the one the weights were trained with).")


def queued(fn: Any) -> Any:
    """fn() once one of the server's segmentation slots is free (pipeline.PAGE_SLOTS); until
    then the page says how many other segmentations it is waiting for."""
    box = st.empty()

    def waiting(others: int) -> None:
        box.info(f"Waiting for {others} other segmentation{'s' if others != 1 else ''} to "
                 "finish (the server runs a limited number at a time)...")

    with pipeline.PAGE_SLOTS.slot(waiting):
        box.empty()
        return fn()


# ----------------------------------------------------------------------------- scan state
def set_scan(volume: Any, origin: str) -> None:
    """Make volume the current scan and forget results and settings of the previous one."""
    state.volume, state.origin = volume, origin
    state.scan_id = state.get("scan_id", 0) + 1
    state.slice_results, state.volume_result, state.load_error = {}, None, None
    state.files_memo, state.window_memo = {}, {}
    state.slice = volume.num_slices // 2
    for key in ("manual_window", "manual_level"):
        state.pop(key, None)  # sidebar_display sets them from the new scan


def load_into_state(origin: str, fn: Any, *args: Any) -> None:
    """Load a scan with fn(*args); on failure keep the message and show no scan."""
    try:
        set_scan(fn(*args), origin)
    except SpineInputError as exc:  # may quote user text (a typed path): plain, not Markdown
        state.volume, state.load_error = None, inputs.plain(str(exc))
    except MemoryError:
        state.volume, state.load_error = None, "Out of memory while reading the scan."
    except Exception as exc:
        logger.exception("could not load %s", origin)  # the details (paths too) stay in the log
        state.volume = None
        state.load_error = inputs.plain(
            f"Could not read {origin} ({type(exc).__name__}); the server's log has the details."
        )


def pipeline_window(volume: Any, low: float, high: float) -> tuple[float, float]:
    """Percentile window of the current scan, memoised per scan and percentiles."""
    key = (state.get("scan_id", 0), low, high)
    memo = state.setdefault("window_memo", {})
    if key not in memo:
        memo[key] = export.percentile_window(volume, low, high)
    return memo[key]


def open_study(source: Any) -> Any:
    """A DICOM input: keep its series for the choice; the preselected one's Volume."""
    state.study = None  # stays None when the input cannot be read
    state.study = inputs.read_study(source)
    state.study_id = state.get("study_id", 0) + 1
    keys, index = inputs.series_choice(state.study)
    return state.study.load(keys[index] if index is not None else None)


def load_dicom_into_state(origin: str, fn: Any, *args: Any) -> None:
    """load_into_state for a DICOM input: a message quoting its headers stays plain text."""
    load_into_state(origin, fn, *args)  # its messages are made plain text there


def load_data_file(path: Any) -> Any:
    """A file or folder in the data folder: NIfTI, or DICOM (a folder, .zip, .dcm)."""
    return open_study(path) if inputs.is_dicom_path(path) else load_volume(path)


def load_path() -> None:
    state.study = None
    load_dicom_into_state(
        state.path_text,
        lambda text: load_data_file(pipeline.resolve_data_path(text, folders=True)),
        state.path_text,
    )


def load_example() -> None:
    state.study = None
    load_into_state(EXAMPLE, pipeline.example_scan)


def load_uploads(files: list[Any]) -> None:
    """New uploads: DICOM (one or several .dcm files, zips) as a study, else one scan."""
    state.study = None
    # The one place an upload's name enters: from here on (page, file names, ZIP entries,
    # VIA JSON) only the safe name is used.
    names = [safe_filename(f.name) for f in files]
    try:
        dicom = inputs.dicom_uploads([(n, f.getvalue()) for n, f in zip(names, files, strict=True)])
    except SpineInputError as exc:
        state.volume, state.load_error = None, str(exc)
        return
    if dicom:  # never named after its files: their names often carry the patient's
        load_dicom_into_state("the DICOM upload", open_study, dicom)
        return
    upload, filename = files[0], names[0]
    name = filename.removesuffix(".gz").removesuffix(".nii").rsplit(".", 1)[0]
    load_into_state(filename, load_scan, upload.getvalue(), filename, name)


def load_chosen_series() -> None:
    """The series picked in the sidebar (an axial or coronal one is refused, with why)."""
    key = state[f"series_{state.study_id}"]
    load_dicom_into_state("the chosen DICOM series", state.study.load, key)


# ----------------------------------------------------------------------------- sidebar
def sidebar_inputs() -> None:
    st.sidebar.header("1 · Bring a scan")
    files = st.sidebar.file_uploader(
        "Sagittal MRI as NIfTI (.nii, .nii.gz), DICOM (the .dcm files of a series, or a .zip "
        "of a series or study), or one slice as PNG",
        type=["nii", "gz", "zip", "dcm", "dicom", "ima", "png", "jpg", "jpeg"],
        key="upload",
        accept_multiple_files=True,
        help="One 3D sagittal series; DICOM: all the .dcm files of a series at once, or a "
        "zipped series or study (its series are listed, the sagittal one most likely T2 is "
        "preselected and you can pick another); or a single sagittal slice image "
        "(cranial at the top, anterior on the left).",
    )
    ids = tuple(f.file_id for f in files or [])
    if ids and ids != state.get("upload_id"):
        state.upload_id = ids
        load_uploads(files)
    elif not ids:
        state.upload_id = None

    data_dir = os.environ.get(pipeline.DATA_DIR_ENV)
    with st.sidebar.form("path_form", border=False):
        st.text_input(
            "...or a file on this server",
            key="path_text",
            placeholder="subject01.nii.gz",
            help="A path relative to the server's data folder" if data_dir else
            "Switched off: the server has no SPINE_DATA_DIR",
        )
        st.form_submit_button("Open file", on_click=load_path)
    st.sidebar.button("Try an example scan", on_click=load_example, key="example")


def sidebar_model() -> None:
    """Which model segments, so a missing one is no surprise."""
    weights, config = pipeline.resolve_model_paths()
    if weights.is_file():
        name = config.name if hasattr(config, "name") else "given config"
        st.sidebar.caption(f"Model: {weights.name} ({name})")
    else:
        st.sidebar.caption(f"Model: {weights.name} is not installed; viewing works, "
                           "segmenting needs it (see README).")


def sidebar_display(volume: Any) -> tuple[float, float]:
    """Window/level controls; returns (window, level) for the slice shown."""
    st.sidebar.header("2 · Display")
    mode = st.sidebar.radio(
        "Contrast", ["Auto (percentiles)", "Window / level"], horizontal=True, key="contrast"
    )
    if mode.startswith("Auto"):
        low, high = st.sidebar.slider(
            "Percentile range", 0.0, 100.0, WINDOW_PERCENTILES, step=0.5, key="percentiles",
            help="Intensities below/above these percentiles of the scan are black/white.",
        )
        return pipeline_window(volume, low, max(high, low + 0.5))
    vmin, vmax = float(volume.data.min()), float(volume.data.max())
    span = max(vmax - vmin, 1e-3)
    auto_window, auto_level = pipeline_window(volume, *WINDOW_PERCENTILES)
    state.setdefault("manual_window", min(max(auto_window, span / 100), span))
    state.setdefault("manual_level", min(max(auto_level, vmin), vmax))
    window = st.sidebar.slider(
        "Window (width)", span / 100, span, key="manual_window", format="%.4g"
    )
    level = st.sidebar.slider("Level (centre)", vmin, vmax, key="manual_level", format="%.4g")
    return window, level


def sidebar_naming() -> str | None:
    """None (names from the model's S1 evidence) or the user's name for the lowest body."""
    choice = st.sidebar.selectbox(
        "Lowest vertebra found is", [AUTOMATIC, *LEVELS], index=0, key="lowest",
        help="Automatic: the model recognises S1 and the others are counted up from it. "
        "Pick a level to name the lowest body found yourself (the others counted upward).",
    )
    st.sidebar.caption(
        "Names are counted up from S1 when the model finds it; without S1 in view they are "
        "counted from the lowest body (taken as L5) and marked unsure. Check the lowest one."
    )
    return None if choice == AUTOMATIC else choice


def sidebar_overlay() -> dict[str, Any]:
    st.sidebar.header("3 · Overlay")
    return {
        "alpha": st.sidebar.slider("Mask opacity", 0.0, 1.0, 0.45, 0.05, key="alpha"),
        "outlines": st.sidebar.checkbox("Outlines", value=True, key="outlines"),
        "boxes": st.sidebar.checkbox("Boxes", value=False, key="boxes"),
        "names": st.sidebar.checkbox("Level names", value=True, key="names"),
        "scores": st.sidebar.checkbox("Scores", value=True, key="scores"),
    }


# ----------------------------------------------------------------------------- main area
def scan_facts(volume: Any) -> None:
    if state.get("origin") == EXAMPLE:
        st.caption(pipeline.example_description(volume))
    s, h, w = volume.data.shape
    slice_mm, row_mm, col_mm = volume.spacing
    st.markdown(
        f"**{inputs.plain(volume.name)}** &nbsp;·&nbsp; {s} sagittal slices of {h} × {w} px "
        f"&nbsp;·&nbsp; voxel {slice_mm:.2g} × {row_mm:.2g} × {col_mm:.2g} mm "
        f"(slice × row × column) &nbsp;·&nbsp; orientation {volume.orientation}"
    )
    dicom = getattr(volume, "dicom", None)
    if dicom is not None:  # description and date only: never the patient's name
        st.text(f"DICOM {dicom.info.label}")  # header text: shown as text, not Markdown
    for warning in getattr(volume, "geometry_warnings", []):
        st.warning(inputs.plain(warning) if dicom is not None else warning)
    problem = sagittal_problem(volume)
    if problem:
        st.error(f"This scan cannot be segmented: {problem}")


def dicom_series() -> None:
    """The series of the DICOM input: a table, and the choice in the sidebar."""
    study = state.get("study")
    if study is None:
        return
    keys, index = inputs.series_choice(study)
    labels = {info.key: info.label for info in study.series}
    st.sidebar.selectbox(
        "DICOM series", keys, index=index, format_func=labels.__getitem__,
        key=f"series_{state.study_id}", on_change=load_chosen_series,
        placeholder="No sagittal series: pick one to see why",
        help="Preselected: the sagittal series most likely T2 (from the series description, "
        "echo and repetition times). Axial and coronal series are listed but cannot be "
        "segmented: the model is sagittal.",
    )  # fmt: skip
    with st.expander(f"{len(keys)} DICOM series found", expanded=len(keys) > 1):
        st.dataframe(
            inputs.series_rows(study), hide_index=True, width="stretch",
            column_config=inputs.SERIES_COLUMNS,
        )  # fmt: skip
        st.caption(
            "Shown: each series' description and date, never the patient's name. The DICOM "
            "SEG carries the source's patient module, as the standard requires (it must match "
            "the images it belongs to)."
        )


def segment_buttons(volume: Any) -> None:
    left, right = st.columns(2)
    if left.button("Segment this slice", key="segment_slice", type="primary", width="stretch"):
        index = state.slice
        with st.spinner(f"Segmenting slice {index}..."):
            result = guarded(
                f"segmenting slice {index}",
                lambda: queued(lambda: get_segmenter().segment_slice(volume, index)),
            )
        if result is not None:
            state.slice_results[index] = result
            state.files_memo = {k: v for k, v in state.files_memo.items() if k[1] != index}
    if right.button(
        f"Segment all {volume.num_slices} slices", key="segment_volume", width="stretch"
    ):
        bar = st.progress(0.0, text="Loading the model...")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"Segmented {done} of {total} slices")

        # The previous result and its downloads go first: never two label maps at once.
        state.volume_result, state.files_memo = None, {}
        result = guarded(
            "segmenting the volume",
            lambda: queued(lambda: get_segmenter().segment_volume(volume, progress=progress)),
        )
        bar.empty()
        if result is not None:  # supersedes the single-slice results
            state.volume_result, state.slice_results = result, {}
            state.files_memo = {}


def current_result(index: int, lowest: str) -> tuple[Any, str]:
    """(SliceResult or None, where it came from) for the slice shown, named up from
    `lowest`; the newest wins (segmenting the volume clears the single-slice results)."""
    if index in state.slice_results:
        return state.slice_results[index].renamed(lowest), "slice"
    if state.volume_result is not None:
        return state.volume_result.renamed(lowest).slice_result(index), "volume"
    return None, "slice"


def legend(result: Any) -> None:
    chips = []
    positions = export.result_positions(result)
    for level, pos in zip(result.levels, positions, strict=True):
        r, g, b = (round(255 * c) for c in export.level_color(pos))
        chips.append(
            f'<span style="display:inline-block;margin:0 .9em .3em 0;white-space:nowrap">'
            f'<span style="display:inline-block;width:.9em;height:.9em;border-radius:.2em;'
            f'background:rgb({r},{g},{b});vertical-align:middle"></span>&nbsp;{level}</span>'
        )
    st.markdown("".join(chips), unsafe_allow_html=True)


def downloads(volume: Any, index: int, picture: Any, source: str, lowest: str) -> None:
    st.subheader("Take it away")
    st.download_button(
        "Overlay (PNG)", export.png_bytes(picture), f"{volume.name}_s{index:03d}_overlay.png",
        "image/png", key="dl_png", width="stretch",
    )
    if source == "volume":
        key, result, what = (state.scan_id, "volume", lowest), state.volume_result, "volume"
    else:
        key, result = (state.scan_id, index, lowest), state.slice_results[index]
        what = f"slice {index}"
    memo = state.files_memo
    if key not in memo:  # built once per result, not on every slider move
        memo[key] = export.result_files(volume, result.renamed(lowest))
    files = memo[key]
    for kind, label, tip in (
        ("labels", f"Label map, {what} (NIfTI)", "Same grid and affine as the input scan."),
        ("via", "Predictions for VIA (JSON)", "Polygons with level and score per slice."),
        ("via_zip", "VIA project with slice images (ZIP)",
         "Unzip, open the images in VGG Image Annotator 2 and import the JSON to correct."),
        ("csv", "Measurements (CSV)", None),
    ):  # fmt: skip
        data, file_name, mime = files[kind]
        st.download_button(
            label, data, file_name, mime, key=f"dl_{kind}", help=tip, width="stretch"
        )
    if getattr(volume, "dicom", None) is not None and result.count:
        seg_key = (*key, "seg")
        if seg_key not in memo:
            from spine.dicom_seg import result_seg_bytes

            memo[seg_key] = result_seg_bytes(volume, result.renamed(lowest))
        st.download_button(
            f"DICOM SEG, {what} (for PACS, OHIF, 3D Slicer)", memo[seg_key],
            f"{volume.name}_seg.dcm", "application/dicom", key="dl_seg", width="stretch",
            help="One segment per vertebral body, named by level, on the frames of the source "
            "series. As the DICOM standard requires, it carries the source's patient module "
            "(name, ID) so that viewers file it with the images.",
        )  # fmt: skip


def main() -> None:
    memory_trimmer()
    st.title("SpineSeg")
    st.caption("Find and outline every vertebra in a sagittal spine MRI (Mask R-CNN).")
    st.caption(RESEARCH_ONLY)
    sidebar_inputs()
    dicom_series()
    if state.get("load_error"):
        st.error(state.load_error)
    volume = state.get("volume")
    if volume is None:
        st.info(
            "Upload a sagittal spine MRI (NIfTI or DICOM) in the sidebar, open one on the "
            "server, or press **Try an example scan**. Then segment one slice or the whole volume "
            "and download the label map, the overlay and the predictions."
        )
        sidebar_model()
        return

    window, level = sidebar_display(volume)
    overlay = sidebar_overlay()
    lowest = sidebar_naming()
    scan_facts(volume)
    image_col, side_col = st.columns([3, 2], gap="large")
    with side_col:
        segment_buttons(volume)
    with image_col:
        if volume.num_slices > 1:
            index = st.slider("Sagittal slice", 0, volume.num_slices - 1, key="slice")
        else:  # a slider from 0 to 0 raises; one slice needs no choice
            index = 0
        result, source = current_result(index, lowest)
        picture = guarded(
            "drawing the slice",
            export.render_slice, volume, index, window, level, result, **overlay,
        )
        if picture is not None:
            st.image(
                picture, width="stretch", output_format="PNG",  # no JPEG artefacts on MRI
                caption=f"Slice {index} of {volume.num_slices}",
            )
    with side_col:
        if result is None:
            st.info("No segmentation on this slice yet.")
        elif result.count == 0:
            st.warning("No vertebra found on this slice.")
        else:
            st.subheader(f"{result.count} vertebra{'e' if result.count > 1 else ''}")
            if result.naming_note:
                st.warning(result.naming_note)
            legend(result)
            st.dataframe(
                result.measurements(), hide_index=True, width="stretch", column_config=COLUMNS
            )
        if state.volume_result is not None:
            with st.expander(f"Whole volume: {state.volume_result.count} bodies"):
                st.dataframe(
                    state.volume_result.renamed(lowest).measurements(), hide_index=True,
                    width="stretch",
                    column_config=COLUMNS,
                )
        if picture is not None and result is not None:
            guarded("preparing the downloads", downloads, volume, index, picture, source, lowest)
    sidebar_model()


main()
