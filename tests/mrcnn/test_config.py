"""Config: Matterport defaults, derived fields, TOML round trip, clear errors."""

import ast
import logging
from pathlib import Path

import numpy as np
import pytest

from mrcnn.config import Config, load_schedule

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def test_defaults_follow_matterport():
    config = Config()
    assert config.BACKBONE == "resnet101"
    assert config.IMAGE_MAX_DIM == 1024 and config.IMAGE_MIN_DIM == 800
    assert config.RPN_ANCHOR_SCALES == (32, 64, 128, 256, 512)
    assert config.POST_NMS_ROIS_TRAINING == 2000 and config.POST_NMS_ROIS_INFERENCE == 1000
    assert config.MASK_SHAPE == [28, 28] and config.MINI_MASK_SHAPE == (56, 56)


def test_derived_fields_follow_overrides():
    config = Config(NUM_CLASSES=3, IMAGES_PER_GPU=4, IMAGE_MAX_DIM=512)
    assert config.BATCH_SIZE == 4
    assert config.IMAGE_SHAPE.tolist() == [512, 512, 3]
    assert config.IMAGE_META_SIZE == 1 + 3 + 3 + 4 + 1 + 3


def test_crop_mode_uses_min_dim_for_the_image_shape():
    config = Config(IMAGE_RESIZE_MODE="crop", IMAGE_MIN_DIM=256, IMAGE_MAX_DIM=512)
    assert config.IMAGE_SHAPE.tolist() == [256, 256, 3]


def test_subclass_overrides_work_like_matterport():
    class ShapesConfig(Config):
        NAME = "shapes"
        NUM_CLASSES = 4
        IMAGE_MAX_DIM = 128

    config = ShapesConfig()
    assert config.IMAGE_META_SIZE == 16
    assert config.IMAGE_SHAPE.tolist() == [128, 128, 3]


def test_unknown_field_is_an_error():
    with pytest.raises(ValueError, match="FOO"):
        Config(FOO=1)


def test_image_size_must_be_divisible_by_64():
    with pytest.raises(ValueError, match="divisible by 64"):
        Config(IMAGE_MAX_DIM=500)


def test_unknown_backbone_is_an_error():
    with pytest.raises(ValueError, match="BACKBONE"):
        Config(BACKBONE="vgg16")


def test_toml_round_trip_keeps_every_field(tmp_path):
    config = Config(NAME="t", NUM_CLASSES=2, BACKBONE="resnet18", MEAN_PIXEL=[1.0, 2.0, 3.0])
    path = tmp_path / "c.toml"
    config.save_toml(path)
    loaded = Config.from_toml(path)
    assert loaded.to_dict() == config.to_dict()
    assert isinstance(loaded.MEAN_PIXEL, np.ndarray)
    assert loaded.RPN_ANCHOR_SCALES == (32, 64, 128, 256, 512)


def test_toml_keys_are_case_insensitive_and_typos_fail(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('backbone = "resnet50"\nnum_classes = 2\n')
    assert Config.from_toml(path).BACKBONE == "resnet50"
    path.write_text("num_clases = 2\n")
    with pytest.raises(ValueError, match="NUM_CLASES"):
        Config.from_toml(path)


def test_replace_returns_a_new_consistent_config():
    config = Config(NUM_CLASSES=2)
    other = config.replace(image_max_dim=256, num_classes=5)
    assert other.IMAGE_SHAPE.tolist() == [256, 256, 3] and other.IMAGE_META_SIZE == 17
    assert config.IMAGE_MAX_DIM == 1024


def test_display_lists_every_field(capsys):
    text = Config(NUM_CLASSES=2).display()
    assert "BACKBONE" in text and "IMAGE_META_SIZE" in text
    assert "BACKBONE" in capsys.readouterr().out


def test_paper_config_is_the_papers_setup():
    config = Config.from_toml(CONFIGS / "paper.toml")
    assert config.BACKBONE == "resnet101"
    assert config.IMAGE_SHAPE.tolist() == [1024, 1024, 3]
    assert config.STEPS_PER_EPOCH == 100 and config.LEARNING_RATE == 0.001
    assert config.DETECTION_MIN_CONFIDENCE == 0.9
    assert load_schedule(CONFIGS / "paper.toml") == {"heads_epochs": 20, "all_epochs": 20}


def test_replace_rejects_a_typo_like_from_toml():
    with pytest.raises(ValueError, match="DETECTON_MIN_CONFIDENCE.*DETECTION_MIN_CONFIDENCE"):
        Config().replace(DETECTON_MIN_CONFIDENCE=0.5)
    with pytest.raises(ValueError, match="DETECTON"):  # the same check, keys in any case
        Config().replace(detecton_min_confidence=0.5)


def test_replace_rejects_a_derived_field():
    with pytest.raises(ValueError, match="BATCH_SIZE.*derived"):
        Config(IMAGES_PER_GPU=2).replace(BATCH_SIZE=8)


def test_gpu_count_is_no_longer_a_field():
    assert not hasattr(Config(), "GPU_COUNT")
    assert Config(IMAGES_PER_GPU=3).BATCH_SIZE == 3
    with pytest.raises(ValueError, match="GPU_COUNT"):
        Config(GPU_COUNT=2)
    with pytest.raises(ValueError, match="GPU_COUNT"):
        Config().replace(GPU_COUNT=1)


def test_a_saved_toml_with_gpu_count_still_loads_with_a_warning(tmp_path, caplog):
    path = tmp_path / "checkpoint_config.toml"
    path.write_text("name = 'old'\ngpu_count = 1\nimages_per_gpu = 4\n")
    with caplog.at_level(logging.WARNING, logger="mrcnn.config"):
        config = Config.from_toml(path)
    assert config.BATCH_SIZE == 4 and "gpu_count" not in config.to_dict()
    assert "gpu_count" in caplog.text and str(path) in caplog.text


def test_a_legacy_gpu_count_above_one_keeps_the_batch_size(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("gpu_count = 2\nimages_per_gpu = 3\n")
    config = Config.from_toml(path)
    assert config.IMAGES_PER_GPU == 6 and config.BATCH_SIZE == 6
    with pytest.raises(ValueError, match="GPU_COUNT"):  # an override is not a saved file
        Config.from_toml(tmp_path / "c.toml", gpu_count=2)


def _getattr_reads_of_config_fields(path: Path) -> list[str]:
    """getattr(x, "FIELD", default) calls in a source file where FIELD is a Config field."""
    fields = set(Config().to_dict())
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "getattr" and len(node.args) == 3
            and isinstance(node.args[1], ast.Constant) and node.args[1].value in fields
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.args[1].value}")
    return found


def test_no_code_reads_a_config_field_through_a_getattr_default():
    # A default there can contradict Config's own (ADD_GT_TO_PROPOSALS was False vs True).
    sources = [*sorted((ROOT / "mrcnn").rglob("*.py")), *sorted((ROOT / "spine").rglob("*.py")),
               ROOT / "app.py"]
    found = [hit for path in sources for hit in _getattr_reads_of_config_fields(path)]
    assert found == []
