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


def test_without_weights_training_starts_from_random_weights_and_help_says_so():
    # Matterport's COCO file is not shipped (weights/README.md): coco cannot be the default.
    args = train.build_parser().parse_args(["--data", "prepared"])
    assert args.weights == "none"
    usage = " ".join(train.build_parser().format_help().split())
    assert "none (random initialisation; the default)" in usage


def test_the_default_config_and_logs_do_not_depend_on_the_checkout():
    args = train.build_parser().parse_args(["--data", "prepared"])
    assert Path(args.config).read_bytes() == (ROOT / "configs" / "paper.toml").read_bytes()
    assert args.logs == "logs"  # relative to the folder the command runs in


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


# ----------------------------------------------------------------------------- checkpoints
def write_checkpoint(path: Path, values: float = 1.0) -> Path:
    """A small HDF5 file in the by-name layout (enough to be read whole)."""
    import h5py
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"conv1"]
        group = f.create_group("conv1")
        group.attrs["weight_names"] = [b"conv1/kernel:0"]
        group.create_dataset("conv1/kernel:0", data=np.full((64, 64, 8), values, np.float32))
    return path


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_bad_checkpoint_is_one_line_and_exit_2_before_any_training(
    damage, tmp_path, tiny_config, monkeypatch, capsys
):
    bad = tmp_path / "bad.weights.h5"
    if damage == "garbage":
        bad.write_bytes(b"\x00\x01 not an HDF5 file " * 100)
    else:
        truncate(write_checkpoint(bad))

    def no_training(*args, **kwargs):
        raise AssertionError("the weights must be checked before the data and the model")

    monkeypatch.setattr(train, "load_datasets", no_training)
    data = tmp_path / "data"
    data.mkdir()
    code = train.main(["--data", str(data), "--config", str(tiny_config), "--weights", str(bad),
                       "--logs", str(tmp_path / "logs")])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("spine-train: error: ") and "not a readable weights file" in err
    assert "Traceback" not in err


def check_last(tmp_path: Path, tiny_config: Path):
    config, _ = train.load_training_config(tiny_config, {})
    (tmp_path / "data").mkdir(exist_ok=True)
    args = train.build_parser().parse_args(
        ["--data", str(tmp_path / "data"), "--weights", "last", "--logs", str(tmp_path / "logs")]
    )
    return train.check_arguments(args, config)


def test_last_falls_back_to_the_newest_readable_checkpoint_of_the_newest_run(
    tmp_path, tiny_config, caplog
):
    old_run = tmp_path / "logs" / "nbtest20240101T0000"
    new_run = tmp_path / "logs" / "nbtest20240202T0000"
    write_checkpoint(old_run / "mask_rcnn_nbtest_0009.weights.h5")
    write_checkpoint(new_run / "mask_rcnn_nbtest_0001.weights.h5")
    good = write_checkpoint(new_run / "mask_rcnn_nbtest_0002.weights.h5")
    truncate(write_checkpoint(new_run / "mask_rcnn_nbtest_0003.weights.h5"))
    (new_run / "mask_rcnn_nbtest_0004.weights.h5").write_bytes(b"garbage")
    with caplog.at_level("WARNING"):
        assert check_last(tmp_path, tiny_config) == good
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 2
    assert "mask_rcnn_nbtest_0004" in skipped[0] and "mask_rcnn_nbtest_0003" in skipped[1]


def test_last_with_no_readable_checkpoint_is_a_user_error(tmp_path, tiny_config):
    run = tmp_path / "logs" / "nbtest20240202T0000"
    truncate(write_checkpoint(run / "mask_rcnn_nbtest_0001.weights.h5"))
    with pytest.raises(MissingWeightsError, match="none of the 1 checkpoints"):
        check_last(tmp_path, tiny_config)


def history(logs: Path) -> list[dict]:
    import csv

    (path,) = logs.glob("*/history.csv")
    return list(csv.DictReader(path.open()))


# Each training run in a process of its own, as a real resume is: the global seed set, and on
# TensorFlow deterministic kernels, so that two runs of the same schedule agree to the last
# digit (with TF's default multithreaded kernels the epoch losses of two identical runs of
# this tiny model drift apart by up to ~3 %, which would hide a resume that is not exact).
TRAIN_IN_A_FRESH_PROCESS = """
import sys
import keras
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
keras.utils.set_random_seed(0)
from spine import train
raise SystemExit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_resumed_run_continues_the_optimizer_and_matches_an_uninterrupted_one(
    tmp_path, tiny_config
):
    """Adam with a warm-up over 3 epochs: stopping after epoch 1 and resuming with
    --weights last (in a new process) must restore the moments, the iteration count (so the
    warm-up goes on), the ROI sampling seed and the data order, batch order within an epoch
    included, so epochs 2-3 are those of the run that never stopped. Resuming with the
    weights only (a fresh optimizer, warm-up from zero, another data order) is 8-14 % off."""
    import subprocess
    import sys

    import numpy as np

    data = tmp_path / "data"
    data.mkdir()
    for seed in range(4):
        make_phantom(seed, size=64, name=f"phantom_{seed:02d}").save(data)

    def run(logs: Path, *extra: str) -> None:
        subprocess.run([
            sys.executable, "-c", TRAIN_IN_A_FRESH_PROCESS,
            "--data", str(data), "--config", str(tiny_config), "--logs", str(logs),
            "--no-augment", "--all-epochs", "0", "--set", "OPTIMIZER=adam",
            "--set", "LEARNING_RATE_WARMUP_STEPS=6", "--set", "LEARNING_RATE=0.002", *extra,
        ], check=True, cwd=ROOT)  # fmt: skip

    run(tmp_path / "whole", "--weights", "none", "--heads-epochs", "3")
    run(tmp_path / "cut", "--weights", "none", "--heads-epochs", "1")
    run(tmp_path / "cut", "--weights", "last", "--heads-epochs", "3")

    whole, cut = history(tmp_path / "whole"), history(tmp_path / "cut")
    assert [row["epoch"] for row in cut] == ["0", "1", "2"]
    for a, b in zip(whole, cut, strict=True):
        np.testing.assert_allclose(float(b["loss"]), float(a["loss"]), rtol=1e-6)
    state = np.load(next((tmp_path / "cut").glob("*/mask_rcnn_nbtest_0003.optimizer.npz")))
    assert int(state["optimizer/iteration"]) == 3 * 2  # 3 epochs of 2 steps


def test_augment_set_changes_the_recipe_and_a_bad_setting_stops_before_loading(capsys, tmp_path):
    aug = train.make_augmentation("default", seed=2, settings=["p_resample=0.3", "p_blur = 0"])
    assert (aug.p_resample, aug.p_blur, aug.seed, aug.rotate_deg) == (0.3, 0.0, 2, 10.0)
    with pytest.raises(SpineInputError, match="drop --no-augment"):
        train.make_augmentation(None, settings=["p_resample=0.3"])
    with pytest.raises(SpineInputError, match="expects NAME=VALUE"):
        train.make_augmentation("default", settings=["p_resample"])
    # The data folder is empty: a typo in a setting is reported, not the missing data.
    code = train.main(["--data", str(tmp_path), "--weights", "none", "--logs",
                       str(tmp_path / "logs"), "--augment-set", "p_resampel=0.3"])  # fmt: skip
    assert code == 2
    assert "unknown augmentation setting 'p_resampel'" in capsys.readouterr().err
