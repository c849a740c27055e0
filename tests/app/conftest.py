"""Fixtures for the app tests: a tiny untrained model and small phantom scans.

The tiny model (resnet18 at width 0.25, 128 px, random weights, DETECTION_MIN_CONFIDENCE 0)
only exercises the plumbing: it always finds "vertebrae", in random places. Accuracy is
tested with the trained model, not here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app.py"


def build_tiny_model(folder: Path) -> tuple[Path, Path]:
    """Save a random-init tiny inference model (weights + config) into folder (seeded)."""
    import keras

    from mrcnn.config import Config
    from mrcnn.model import MaskRCNN

    keras.utils.set_random_seed(0)
    config = Config(
        NAME="tiny", NUM_CLASSES=2, BACKBONE="resnet18", BACKBONE_WIDTH=0.25,
        IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128, IMAGES_PER_GPU=1,
        TOP_DOWN_PYRAMID_SIZE=32, FPN_CLASSIF_FC_LAYERS_SIZE=64, MASK_HEAD_CONV_SIZE=32,
        RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128), PRE_NMS_LIMIT=500,
        POST_NMS_ROIS_INFERENCE=100, DETECTION_MIN_CONFIDENCE=0.0, DETECTION_MAX_INSTANCES=6,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    weights, toml = folder / "tiny.weights.h5", folder / "tiny.toml"
    MaskRCNN("inference", config, str(folder)).save_weights(weights)
    config.save_toml(toml)
    return weights, toml


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture()
def model_env(tiny_model, monkeypatch):
    """Point the app at the tiny model (the app reads these when it loads the model)."""
    weights, config = tiny_model
    monkeypatch.setenv("SPINESEG_WEIGHTS", str(weights))
    monkeypatch.setenv("SPINESEG_CONFIG", str(config))
    return tiny_model


@pytest.fixture(scope="session")
def phantom_bytes(tmp_path_factory) -> bytes:
    """A small phantom scan (64 x 64 px, 5 slices) as .nii.gz bytes."""
    from spine.phantom import make_phantom
    from spine.volume import save_nifti

    path = tmp_path_factory.mktemp("scans") / "phantom_small.nii.gz"
    save_nifti(make_phantom(11, size=64, num_slices=5).image, path)
    return path.read_bytes()


@pytest.fixture()
def no_data_dir(monkeypatch):
    monkeypatch.delenv("SPINE_DATA_DIR", raising=False)
    return os.environ
