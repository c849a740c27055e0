"""spine-train: schedule, overrides, starting weights, resume after an interruption."""

from pathlib import Path

import pytest

from spine import train
from spine.errors import MissingWeightsError, SpineInputError
from spine.phantom import make_phantom

ROOT = Path(__file__).resolve().parents[2]


def test_schedule_runs_heads_then_all_then_finetune_with_cumulative_epochs():
    schedule = train.Schedule(heads_epochs=20, all_epochs=20, finetune_epochs=5)
    assert schedule.stages() == [("heads", 20, 1.0), ("all", 40, 1.0), ("all", 45, 0.1)]


def test_empty_stages_are_dropped():
    assert train.Schedule(heads_epochs=0, all_epochs=3).stages() == [("all", 3, 1.0)]


def test_overrides_are_parsed_as_python_literals():
    overrides = train.parse_overrides(
        ["image_max_dim=512", "BACKBONE=resnet50", "RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128)"]
    )
    assert overrides == {
        "IMAGE_MAX_DIM": 512, "BACKBONE": "resnet50", "RPN_ANCHOR_SCALES": (8, 16, 32, 64, 128)
    }


def test_override_without_equals_is_a_user_error():
    with pytest.raises(SpineInputError, match="KEY=VALUE"):
        train.parse_overrides(["IMAGE_MAX_DIM"])


def test_paper_config_with_command_line_overrides():
    config, schedule = train.load_training_config(
        ROOT / "configs" / "paper.toml", {"IMAGE_MAX_DIM": 512, "ALL_EPOCHS": 3}
    )
    assert config.BACKBONE == "resnet101" and config.IMAGE_MAX_DIM == 512
    assert schedule.stages() == [("heads", 20, 1.0), ("all", 23, 1.0)]


def test_typo_in_an_override_is_a_user_error():
    with pytest.raises(SpineInputError, match="IMAGE_MAX_DIMM"):
        train.load_training_config(ROOT / "configs" / "paper.toml", {"IMAGE_MAX_DIMM": 512})


def test_missing_coco_weights_fail_fast_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setattr(train, "COCO_WEIGHTS", tmp_path / "mask_rcnn_coco.h5")
    with pytest.raises(MissingWeightsError, match="mask_rcnn_coco.h5"):
        train.initial_weights(model=None, choice="coco")


def test_missing_weights_path_is_a_user_error(tmp_path):
    with pytest.raises(MissingWeightsError, match="not found"):
        train.initial_weights(model=None, choice=str(tmp_path / "nope.weights.h5"))


def test_missing_data_folder_exits_2_with_a_message(capsys, tmp_path):
    code = train.main(["--data", str(tmp_path / "missing"), "--weights", "none"])
    assert code == 2
    assert "data folder not found" in capsys.readouterr().err


@pytest.mark.slow
def test_training_resumes_from_the_last_checkpoint(tmp_path, tiny_config):
    """Train 1 epoch, 'crash', resume with --weights last: epoch 2 continues the same run."""
    data = tmp_path / "data"
    data.mkdir()
    for seed in range(4):
        make_phantom(seed, size=64, name=f"phantom_{seed:02d}").save(data)
    logs = tmp_path / "logs"
    common = ["--data", str(data), "--config", str(tiny_config), "--logs", str(logs)]

    assert train.main([*common, "--weights", "none", "--heads-epochs", "1",
                       "--all-epochs", "0"]) == 0
    first = sorted(logs.glob("*/*.weights.h5"))
    assert [p.name for p in first] == ["mask_rcnn_nbtest_0001.weights.h5"]

    assert train.main([*common, "--weights", "last", "--heads-epochs", "1",
                       "--all-epochs", "1"]) == 0
    checkpoints = sorted(logs.glob("*/*.weights.h5"))
    assert [p.name for p in checkpoints] == [
        "mask_rcnn_nbtest_0001.weights.h5", "mask_rcnn_nbtest_0002.weights.h5"
    ]
    assert len({p.parent for p in checkpoints}) == 1  # the same run folder

    # A checkpoint passed as a path starts a new run at epoch 0 (a fine-tune), not a resume.
    fresh = tmp_path / "fresh"
    assert train.main([*common[:-1], str(fresh), "--weights", str(checkpoints[-1]),
                       "--heads-epochs", "0", "--all-epochs", "1"]) == 0
    assert [p.name for p in fresh.glob("*/*.weights.h5")] == ["mask_rcnn_nbtest_0001.weights.h5"]


def test_extra_training_folders_and_empty_slices_go_to_the_training_set(tmp_path):
    data, extra = tmp_path / "data", tmp_path / "phantoms"
    for folder, seeds in ((data, range(4)), (extra, range(10, 12))):
        folder.mkdir()
        for seed in seeds:
            make_phantom(seed, size=64, name=f"phantom_{seed:02d}").save(folder)
    base_train, base_val = train.load_datasets(data)
    more_train, more_val = train.load_datasets(data, extra_train=[extra], empty_slices=2)
    assert more_val.num_images == base_val.num_images  # validation never changes
    added = more_train.num_images - base_train.num_images
    extra_volumes = {info["volume"] for info in more_train.image_info} - {
        info["volume"] for info in base_train.image_info}
    assert extra_volumes == {"phantom_10", "phantom_11"}
    empties = [i for i in more_train.image_ids if more_train.load_mask(i)[0].shape[-1] == 0]
    assert 0 < len(empties) <= 2 * 5 and added > len(empties)
    assert all(base_train.load_mask(i)[0].shape[-1] > 0 for i in base_train.image_ids)


def test_missing_extra_training_folder_is_a_user_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for seed in range(4):
        make_phantom(seed, size=64, name=f"phantom_{seed:02d}").save(data)
    with pytest.raises(SpineInputError, match="extra training folder not found"):
        train.load_datasets(data, extra_train=[tmp_path / "nope"])
