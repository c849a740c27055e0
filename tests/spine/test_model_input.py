"""spine.model_input: one definition of what the network is shown, used by training (the
SpineDataset images) and inference (spine.pipeline.Segmenter) alike."""

from __future__ import annotations

import numpy as np
import pytest

from spine import pipeline
from spine.config import WINDOW_PERCENTILES, SpineConfig
from spine.dataset import SpineDataset
from spine.folders import VolumePair
from spine.model_input import ModelInput
from spine.phantom import make_phantom
from spine.volume import volume_from_nifti


class RecordingModel:
    """Stands in for MaskRCNN: keeps every image detect() is shown, finds nothing."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def detect(self, images, verbose=0):
        self.images.extend(images)
        h, w = images[0].shape[:2]
        empty = np.zeros([h, w, 0], bool)
        return [{"rois": np.zeros([0, 4], np.int32), "class_ids": np.zeros([0], np.int32),
                 "scores": np.zeros([0], np.float32), "masks": empty} for _ in images]  # fmt: skip


@pytest.fixture(scope="module")
def volume_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("input")
    phantom = make_phantom(3, size=64, num_slices=6)
    image, labels, _ = phantom.save(folder)
    return VolumePair(phantom.name, image, labels), volume_from_nifti(phantom.image)


@pytest.mark.parametrize("neighbours", [False, True], ids=["grey", "2.5D"])
def test_training_images_are_the_images_inference_shows_the_model(volume_pair, neighbours):
    pair, volume = volume_pair
    dataset = SpineDataset(neighbour_channels=neighbours, ignore_unlabelled=False)
    dataset.load_volumes([pair], empty_slices=volume.num_slices)  # every slice
    dataset.prepare()
    model = RecordingModel()
    config = SpineConfig(NUM_CLASSES=2, NEIGHBOUR_CHANNELS=neighbours)
    pipeline.Segmenter(model, config).segment_volume(volume, batch=4)
    assert len(model.images) == volume.num_slices == dataset.num_images
    for image_id, info in enumerate(dataset.image_info):
        shown = model.images[info["slice"]]  # uint8 [H, W, 3]
        np.testing.assert_array_equal(dataset.load_image(image_id), shown)


def test_the_config_decides_the_input_and_the_window_is_the_one_constant():
    assert ModelInput.of(None) == ModelInput(neighbour_channels=False)
    assert ModelInput.of(SpineConfig(NEIGHBOUR_CHANNELS=True)).neighbour_channels is True
    assert ModelInput().percentiles == WINDOW_PERCENTILES


def test_the_window_maps_the_percentiles_to_black_and_white():
    data = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)  # [S, H, W]
    stack = ModelInput().stack(data)
    low, high = np.percentile(data, WINDOW_PERCENTILES)
    assert stack.dtype == np.uint8 and stack.shape == data.shape
    assert stack[data <= low].max() == 0 and stack[data >= high].min() == 255


def test_description_round_trips_and_a_difference_is_named():
    wide = ModelInput(neighbour_channels=True, percentiles=(1.0, 99.0))
    assert ModelInput.from_description(wide.describe()) == wide
    assert ModelInput.from_description({}) == ModelInput()  # a split.json from before
    assert wide.mismatch(wide) == []
    assert wide.mismatch(ModelInput()) == [
        "neighbour_channels true vs false",
        "window percentiles [1.0, 99.0] vs [0.5, 99.5]",
    ]
