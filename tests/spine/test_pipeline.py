"""spine.pipeline and spine.export: from a Volume to named, linked vertebra masks and files.

Most tests use an oracle in place of the network: it answers model.detect with the
phantom's true bodies (in shuffled order), so every number the pipeline adds (ordering,
linking, naming, measurements, geometry of the outputs) can be checked exactly.
"""

from __future__ import annotations

import json

import cv2
import nibabel as nib
import numpy as np
import pytest
from oracle import shuffled_oracle

from spine import export, pipeline
from spine.errors import MissingWeightsError, SpineInputError
from spine.phantom import make_phantom
from spine.volume import nifti_bytes, save_nifti, volume_from_nifti


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(3, size=64, num_slices=6, orientation="LPS")


@pytest.fixture(scope="module")
def volume(phantom):
    return volume_from_nifti(phantom.image, name="ph3")


@pytest.fixture(scope="module")
def truth(volume, phantom):
    return volume.load_label_map(phantom.labels)  # int32 [S, H, W], 1 = highest body


@pytest.fixture()
def oracle(volume, truth):
    model = shuffled_oracle(volume, truth)
    return pipeline.Segmenter(model, config=None), model


# ----------------------------------------------------------------------------- volume
def test_segment_volume_reproduces_the_true_label_map(oracle, volume, truth):
    segmenter, _ = oracle
    result = segmenter.segment_volume(volume)
    assert result.labels.shape == truth.shape
    np.testing.assert_array_equal(result.labels, truth)


def test_segment_volume_names_bodies_top_to_bottom(oracle, volume, truth):
    from spine.levels import level_names

    result = oracle[0].segment_volume(volume)
    n = int(truth.max())
    assert result.count == n
    assert result.levels == list(level_names(n))


def test_renaming_shifts_every_name_and_keeps_the_masks(oracle, volume):
    result = oracle[0].segment_volume(volume)
    moved = result.renamed("S1")
    assert moved.levels[-1] == "S1" and moved.levels[:-1] == result.levels[1:]
    assert moved.labels is result.labels
    sl = oracle[0].segment_slice(volume, 2).renamed("L4")
    assert sl.levels[-1] == "L4" and len(sl.levels) == sl.masks.shape[-1]


def test_segment_volume_batches_slices_and_reports_progress(oracle, volume):
    segmenter, model = oracle
    seen = []
    segmenter.segment_volume(volume, progress=lambda *args: seen.append(args), batch=4)
    assert model.calls == [4, 2]  # 6 slices, 2 detect calls
    assert seen == [(0, 6), (4, 6), (6, 6)]


def test_volume_label_nifti_has_the_input_geometry(oracle, volume, phantom):
    result = oracle[0].segment_volume(volume)
    img = nib.Nifti1Image.from_bytes(
        __import__("gzip").decompress(nifti_bytes(export.volume_labels_nifti(volume, result)))
    )
    np.testing.assert_allclose(img.affine, phantom.labels.affine)
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(phantom.labels.dataobj))


def test_volume_measurements_are_voxel_counts_times_voxel_size(oracle, volume, truth):
    result = oracle[0].segment_volume(volume)
    rows = result.measurements()
    voxel = float(np.prod(volume.spacing))
    assert [r["level"] for r in rows] == result.levels
    for k, row in enumerate(rows, start=1):
        assert row["volume_mm3"] == pytest.approx(np.sum(truth == k) * voxel, abs=0.1)
        assert row["slices"] == int(np.any(truth == k, axis=(1, 2)).sum())
        assert 0 < row["height_mm"] < 60


def test_volume_slice_result_keeps_the_volume_names(oracle, volume, truth):
    result = oracle[0].segment_volume(volume)
    index = volume.num_slices // 2
    sl = result.slice_result(index)
    present = [k for k in range(1, result.count + 1) if np.any(truth[index] == k)]
    assert sl.levels == [result.levels[k - 1] for k in present]
    np.testing.assert_array_equal(sl.label_map() > 0, truth[index] > 0)


# ----------------------------------------------------------------------------- slice
def test_segment_slice_returns_masks_on_the_native_grid_top_to_bottom(oracle, volume, truth):
    index = volume.num_slices // 2
    result = oracle[0].segment_slice(volume, index)
    ids = np.unique(truth[index])[1:]
    assert result.masks.shape == truth.shape[1:] + (len(ids),)
    for k, body in enumerate(ids):  # truth is numbered top to bottom
        np.testing.assert_array_equal(result.masks[..., k], truth[index] == body)
    assert result.boxes.dtype == np.int32 and result.boxes.shape == (len(ids), 4)


def test_segment_slice_rejects_a_slice_outside_the_volume(oracle, volume):
    with pytest.raises(SpineInputError, match="slices 0-5"):
        oracle[0].segment_slice(volume, 6)


def test_slice_measurements_use_the_pixel_spacing(oracle, volume):
    result = oracle[0].segment_slice(volume, 2)
    _, row_mm, col_mm = volume.spacing
    for k, row in enumerate(result.measurements()):
        area = result.masks[..., k].sum() * row_mm * col_mm
        assert row["area_mm2"] == pytest.approx(area, abs=0.1)
        assert row["score"] == pytest.approx(float(result.scores[k]), abs=1e-3)


def test_slice_label_nifti_fills_only_that_slice(oracle, volume):
    result = oracle[0].segment_slice(volume, 2)
    labels = volume.load_label_map(export.slice_labels_nifti(volume, result))
    assert np.flatnonzero(labels.any(axis=(1, 2))).tolist() == [2]
    np.testing.assert_array_equal(labels[2], result.label_map())


# ----------------------------------------------------------------------------- linking
def _square(shape, y, x, size=10):
    mask = np.zeros(shape, bool)
    mask[y : y + size, x : x + size] = True
    return mask


def test_link_keeps_one_label_for_a_body_drifting_across_slices():
    shape = (40, 40)
    per_slice = [
        (np.stack([_square(shape, 5, 5 + 2 * s), _square(shape, 25, 5 + 2 * s)], -1),
         np.array([0.9, 0.8], np.float32))
        for s in range(4)
    ]  # fmt: skip
    result = pipeline.link_slices(per_slice, (4, 40, 40), (4.0, 1.0, 1.0))
    assert result.count == 2
    assert set(np.unique(result.labels[:, 5:15])) <= {0, 1}  # upper body is label 1
    assert set(np.unique(result.labels[:, 25:35])) <= {0, 2}
    assert result.scores.tolist() == pytest.approx([0.9, 0.8])


def test_link_bridges_a_one_slice_gap_but_not_a_jump():
    shape = (40, 40)
    empty = (np.zeros(shape + (0,), bool), np.zeros(0, np.float32))
    one = (_square(shape, 5, 5)[..., None], np.array([0.9], np.float32))
    far = (_square(shape, 28, 28)[..., None], np.array([0.9], np.float32))
    bridged = pipeline.link_slices([one, empty, one], (3, 40, 40), (1.0, 1.0, 1.0))
    assert bridged.count == 1
    jumped = pipeline.link_slices([one, far], (2, 40, 40), (1.0, 1.0, 1.0))
    assert jumped.count == 2


def test_a_volume_without_detections_gives_an_empty_label_map():
    nothing = (np.zeros((0, 0, 0), bool), np.zeros(0, np.float32))
    result = pipeline.link_slices([nothing] * 3, (3, 8, 9), (1.0, 1.0, 1.0))
    assert result.count == 0 and result.labels.shape == (3, 8, 9) and not result.labels.any()
    assert result.measurements() == []


def test_overlapping_detections_on_a_slice_go_to_the_higher_score():
    a, b = _square((20, 20), 0, 0), _square((20, 20), 5, 5)
    labels = pipeline.masks_to_labels(np.stack([a, b], -1), np.array([0.5, 0.9]))
    assert labels[7, 7] == 2 and labels[2, 2] == 1


# ----------------------------------------------------------------------------- height
def test_height_of_an_upright_rectangle_is_its_height():
    mask = np.zeros((60, 80), bool)
    mask[10:30, 10:50] = True  # 20 rows x 40 cols
    assert pipeline.body_height_mm(mask, 1.0, 1.0) == pytest.approx(20.0, rel=0.01)
    assert pipeline.body_height_mm(mask, 0.5, 1.0) == pytest.approx(10.0, rel=0.01)


def test_height_of_a_tilted_body_is_not_inflated():
    mask = np.zeros((200, 200), np.uint8)
    box = cv2.boxPoints(((100.0, 100.0), (80.0, 40.0), 20.0))  # 80 wide, 40 high, 20 deg
    cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    assert pipeline.body_height_mm(mask > 0, 1.0, 1.0) == pytest.approx(40.0, rel=0.05)


# ----------------------------------------------------------------------------- model files
def test_missing_weights_say_which_file_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv(pipeline.WEIGHTS_ENV, raising=False)
    missing = tmp_path / "nowhere.weights.h5"
    with pytest.raises(MissingWeightsError) as err:
        pipeline.load_segmenter(missing)
    message = str(err.value)
    assert str(missing) in message and "spine-train" in message and "weights/" in message


def test_default_weights_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(pipeline.WEIGHTS_ENV, str(tmp_path / "env.weights.h5"))
    monkeypatch.setenv(pipeline.CONFIG_ENV, str(tmp_path / "env.toml"))
    weights, config = pipeline.resolve_model_paths()
    assert weights == tmp_path / "env.weights.h5" and config == tmp_path / "env.toml"
    with pytest.raises(MissingWeightsError, match="env.weights.h5"):
        pipeline.load_segmenter()


def test_without_environment_the_bundled_demo_model_is_used(monkeypatch):
    monkeypatch.delenv(pipeline.WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(pipeline.CONFIG_ENV, raising=False)
    assert pipeline.resolve_model_paths() == (pipeline.DEFAULT_WEIGHTS, pipeline.DEFAULT_CONFIG)
    assert pipeline.DEFAULT_WEIGHTS.name == "spineseg_demo.weights.h5"


def test_missing_config_is_reported(tmp_path):
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"")
    with pytest.raises(MissingWeightsError, match="config not found"):
        pipeline.load_segmenter(weights, tmp_path / "missing.toml")


# A tiny untrained network checks that the real MaskRCNN plugs in (shapes, not accuracy).
TINY = dict(
    NAME="tiny", NUM_CLASSES=2, BACKBONE="resnet18", BACKBONE_WIDTH=0.25, IMAGE_MIN_DIM=64,
    IMAGE_MAX_DIM=64, TOP_DOWN_PYRAMID_SIZE=16, FPN_CLASSIF_FC_LAYERS_SIZE=32,
    MASK_HEAD_CONV_SIZE=16, RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128), PRE_NMS_LIMIT=200,
    POST_NMS_ROIS_INFERENCE=50, DETECTION_MIN_CONFIDENCE=0.0, DETECTION_MAX_INSTANCES=4,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import keras

    from mrcnn.config import Config
    from mrcnn.model import MaskRCNN

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("tiny")
    config = Config(**TINY)
    MaskRCNN("inference", config, str(folder)).save_weights(folder / "tiny.weights.h5")
    config.save_toml(folder / "tiny.toml")
    return folder / "tiny.weights.h5", folder / "tiny.toml"


def test_a_real_network_returns_masks_on_the_native_grid(tiny_model, volume):
    segmenter = pipeline.load_segmenter(*tiny_model)
    sl = segmenter.segment_slice(volume, 1)
    assert sl.masks.shape[:2] == volume.data.shape[1:] and sl.masks.dtype == bool
    assert len(sl.levels) == sl.masks.shape[-1] == len(sl.scores)
    result = segmenter.segment_volume(volume)
    assert result.labels.shape == volume.data.shape
    assert result.labels.max() == result.count


def test_weights_that_do_not_fit_the_config_are_reported(tiny_model, tmp_path):
    from mrcnn.config import Config

    Config(**{**TINY, "BACKBONE_WIDTH": 0.5}).save_toml(tmp_path / "wider.toml")
    with pytest.raises(MissingWeightsError, match="could not be loaded"):
        pipeline.load_segmenter(tiny_model[0], tmp_path / "wider.toml")


def test_a_corrupt_weights_file_is_reported(tiny_model, tmp_path):
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"certainly not HDF5")
    with pytest.raises(MissingWeightsError, match="could not be loaded"):
        pipeline.load_segmenter(junk, tiny_model[1])


# ----------------------------------------------------------------------------- scans in
def test_data_path_inside_the_folder_is_accepted(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    assert pipeline.resolve_data_path("a.nii.gz", tmp_path) == (tmp_path / "a.nii.gz").resolve()


@pytest.mark.parametrize("text", ["../outside.nii.gz", "/etc/passwd"])
def test_data_path_outside_the_folder_is_refused(tmp_path, text):
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "outside.nii.gz").write_bytes(b"x")
    with pytest.raises(SpineInputError, match="outside the data folder"):
        pipeline.resolve_data_path(text, root)


def test_any_data_path_is_refused_without_a_data_folder(monkeypatch):
    monkeypatch.delenv(pipeline.DATA_DIR_ENV, raising=False)
    with pytest.raises(SpineInputError, match="SPINE_DATA_DIR"):
        pipeline.resolve_data_path("a.nii.gz")


def test_example_scan_prefers_a_bundled_scan(tmp_path, monkeypatch, phantom):
    save_nifti(phantom.image, tmp_path / "real_example.nii.gz")
    save_nifti(phantom.labels, tmp_path / "real_example_vertebrae.nii.gz")
    monkeypatch.setattr(pipeline, "EXAMPLES_DIR", tmp_path)
    assert pipeline.example_scan().name == "real_example"


def test_example_scan_falls_back_to_a_fixed_phantom(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "EXAMPLES_DIR", tmp_path / "none")
    monkeypatch.setattr(pipeline, "EXAMPLE_PHANTOM_SEED", 1)
    a = pipeline.example_scan()
    assert a.data.ndim == 3 and a.name == "phantom_example"


# ----------------------------------------------------------------------------- exports
def test_overlay_is_drawn_with_square_pixels_and_colour(oracle, volume):
    result = oracle[0].segment_slice(volume, 2)
    window, level = export.percentile_window(volume)
    plain = export.render_slice(volume, 2, window, level)
    drawn = export.render_slice(volume, 2, window, level, result)
    h, w = export.display_shape(volume.data.shape[1:], *volume.spacing[1:])
    assert plain.shape == drawn.shape == (h, w, 3) and max(h, w) >= export.DISPLAY_SIZE
    assert np.all(plain[..., 0] == plain[..., 1])  # grey without a result
    assert np.any(drawn[..., 0] != drawn[..., 1])  # coloured masks with one


def test_png_bytes_decode_to_the_same_picture():
    rgb = np.random.default_rng(0).integers(0, 255, (8, 9, 3), dtype=np.uint8)
    decoded = cv2.imdecode(np.frombuffer(export.png_bytes(rgb), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded[..., ::-1], rgb)


def test_measurements_csv_has_one_row_per_body(oracle, volume):
    rows = oracle[0].segment_volume(volume).measurements()
    lines = export.measurements_csv(rows, pipeline.VOLUME_COLUMNS).strip().splitlines()
    assert lines[0] == "level,name_confidence,score,volume_mm3,height_mm,slices,name_note"
    assert len(lines) == len(rows) + 1
    assert export.measurements_csv([], pipeline.SLICE_COLUMNS) == (
        "level,name_confidence,score,area_mm2,height_mm,name_note\n"
    )


def test_via_json_round_trips_the_slice_masks(oracle, volume, tmp_path):
    from spine import via

    result = oracle[0].segment_slice(volume, 2)
    text = export.via_json(volume, [result], sizes={2: 1234})
    (image,) = via.read_via(json.loads(text))
    assert image.filename == "ph3_s002.png" and image.size == 1234
    assert [r.label for r in image.regions] == result.levels
    masks = via.regions_to_masks(image.regions, result.masks.shape[:2])  # [H, W, N]
    for k in range(result.count):  # polygons are outlines: allow a pixel ring of difference
        inter = np.logical_and(masks[..., k], result.masks[..., k]).sum()
        union = np.logical_or(masks[..., k], result.masks[..., k]).sum()
        assert inter / union > 0.7
    regions = json.loads(text)["ph3_s002.png1234"]["regions"]
    scores = [r["region_attributes"]["score"] for r in regions]
    assert scores == pytest.approx(result.scores.tolist(), abs=1e-3)


def test_result_files_bundle_via_json_with_the_images_it_names(oracle, volume):
    import io
    import zipfile

    from spine import via

    result = oracle[0].segment_volume(volume)
    files = export.result_files(volume, result)
    assert files["labels"][1] == "ph3_vertebrae.nii.gz"
    with zipfile.ZipFile(io.BytesIO(files["via_zip"][0])) as zf:
        names = set(zf.namelist())
        entries = via.read_via(json.loads(zf.read("ph3_via.json")))
        for entry in entries:  # every image the JSON names is in the zip, with its size
            assert entry.filename in names
            assert len(zf.read(entry.filename)) == entry.size
    assert len(entries) == int(result.labels.any(axis=(1, 2)).sum())


# ----------------------------------------------------------------------------- 2.5D input
class RecordingModel:
    """Records the images model.detect is shown and finds nothing."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def detect(self, images, verbose=0):
        self.images += list(images)
        empty = np.zeros(images[0].shape[:2] + (0,), bool)
        return [{"rois": np.zeros([0, 4], np.int32), "class_ids": np.zeros([0], np.int32),
                 "scores": np.zeros([0], np.float32), "masks": empty} for _ in images]  # fmt: skip


def test_a_neighbour_model_is_shown_the_slices_on_either_side(volume):
    from spine.config import SpineConfig

    model = RecordingModel()
    config = SpineConfig(NUM_CLASSES=2, NEIGHBOUR_CHANNELS=True)
    pipeline.Segmenter(model, config).segment_volume(volume, batch=4)
    stack = pipeline.model_stack(volume)
    last = volume.num_slices - 1
    assert len(model.images) == volume.num_slices
    for s, image in enumerate(model.images):
        np.testing.assert_array_equal(image[..., 0], stack[max(s - 1, 0)])
        np.testing.assert_array_equal(image[..., 1], stack[s])
        np.testing.assert_array_equal(image[..., 2], stack[min(s + 1, last)])


def test_a_plain_model_is_shown_the_slice_in_every_channel(volume):
    from spine.config import SpineConfig

    model = RecordingModel()
    pipeline.Segmenter(model, SpineConfig(NUM_CLASSES=2)).segment_slice(volume, 2)
    (image,) = model.images
    stack = pipeline.model_stack(volume)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], stack[2])


def test_the_model_config_file_may_ask_for_neighbour_channels(tmp_path):
    toml = tmp_path / "m.toml"
    toml.write_text('num_classes = 2\nneighbour_channels = true\n')
    config = pipeline.load_model_config(toml, tmp_path / "w.weights.h5")
    assert config.NEIGHBOUR_CHANNELS is True
