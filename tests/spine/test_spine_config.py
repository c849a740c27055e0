"""spine.config: the spine-specific input setting on top of mrcnn's Config."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrcnn.config import Config
from spine.config import SpineConfig, uses_neighbours

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_neighbour_channels_are_off_unless_asked_for():
    assert uses_neighbours(SpineConfig(NUM_CLASSES=2)) is False
    assert uses_neighbours(SpineConfig(NUM_CLASSES=2, NEIGHBOUR_CHANNELS=True)) is True
    assert uses_neighbours(Config(NUM_CLASSES=2)) is False  # a plain mrcnn config


def test_the_setting_survives_replace_and_toml(tmp_path):
    config = SpineConfig(NUM_CLASSES=2, NEIGHBOUR_CHANNELS=True).replace(IMAGE_MAX_DIM=256)
    assert isinstance(config, SpineConfig) and config.NEIGHBOUR_CHANNELS is True
    config.save_toml(tmp_path / "c.toml")
    assert SpineConfig.from_toml(tmp_path / "c.toml").NEIGHBOUR_CHANNELS is True


def test_mrcnn_config_knows_nothing_of_slices(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("num_classes = 2\nneighbour_channels = true\n")
    with pytest.raises(ValueError, match="NEIGHBOUR_CHANNELS"):
        Config.from_toml(path)


@pytest.mark.parametrize(("name", "classes"), [("demo.toml", 3), ("paper.toml", 2)])
def test_bundled_configs_load_as_spine_configs(name, classes):
    # demo: background, vertebral body, S1; paper: background, vertebra (as published)
    config = SpineConfig.from_toml(CONFIGS / name)
    assert config.NUM_CLASSES == classes and isinstance(config.NEIGHBOUR_CHANNELS, bool)
