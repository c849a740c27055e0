"""spine.prepare: slice PNG + VIA export per subject split, split.json (pairs: test_folders.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spine.dataset import SpineDataset
from spine.errors import SpineInputError
from spine.folders import find_pairs, source_of, split_subjects
from spine.phantom import make_phantom
from spine.prepare import main, prepare


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """6 small phantoms from two 'sources' with the real data's naming."""
    folder = tmp_path_factory.mktemp("cohort")
    for i in range(6):
        name = f"{'alpha' if i < 4 else 'beta'}_{i:02d}"
        make_phantom(i, size=48, num_slices=5, name=name).save(folder)
    return folder


def test_prepare_writes_split_pngs_and_via(cohort, tmp_path):
    summary = prepare(cohort, tmp_path, seed=0, progress=False)
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["train"] == summary["train"] and len(split["val"]) == 2  # 1 alpha + 1 beta
    for part in ("train", "val"):
        ds = SpineDataset()
        n = ds.load_via_folder(tmp_path / part)
        ds.prepare()
        assert n == summary["counts"][part]["images"] > 0
        names = {info["id"].rsplit("_s", 1)[0] for info in ds.image_info}
        assert names == set(split[part])  # slices of a subject never cross the split
        masks, _ = ds.load_mask(0)
        assert masks.shape[-1] >= 1 and masks.sum(axis=(0, 1)).min() >= 20
    assert not list(tmp_path.glob(".*"))  # no temp folders left


def test_prepare_is_reproducible(cohort, tmp_path):
    a = prepare(cohort, tmp_path / "a", seed=3, progress=False)
    b = prepare(cohort, tmp_path / "b", seed=3, progress=False)
    assert a["train"] == b["train"] and a["counts"] == b["counts"]
    via_a = (tmp_path / "a" / "val" / "via_region_data.json").read_text()
    assert via_a == (tmp_path / "b" / "val" / "via_region_data.json").read_text()


def test_cli_exit_codes(cohort, tmp_path, capsys):
    assert (
        main(["--src", str(cohort), "--out", str(tmp_path / "o"), "--empty-per-volume", "1"]) == 0
    )
    assert "train:" in capsys.readouterr().out
    assert main(["--src", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    assert "error:" in capsys.readouterr().err


def test_empty_slices_can_be_kept(cohort, tmp_path):
    few = prepare(cohort, tmp_path / "a", progress=False)
    more = prepare(cohort, tmp_path / "b", empty_per_volume=1, progress=False)
    assert more["counts"]["train"]["images"] >= few["counts"]["train"]["images"]
    assert np.isfinite(more["counts"]["train"]["instances"])


def test_neighbour_channels_write_the_adjacent_slices_in_red_and_blue(cohort, tmp_path):
    grey = prepare(cohort, tmp_path / "grey", progress=False, empty_per_volume=5)
    rgb = prepare(cohort, tmp_path / "rgb", progress=False, empty_per_volume=5,
                  neighbour_channels=True)  # fmt: skip
    assert rgb["neighbour_channels"] and not grey["neighbour_channels"]
    assert rgb["counts"] == grey["counts"]
    plain, context = SpineDataset(), SpineDataset()
    plain.load_via_folder(tmp_path / "grey" / "train")
    context.load_via_folder(tmp_path / "rgb" / "train")
    plain.prepare()
    context.prepare()
    grey_of = {info["id"]: plain.load_image(i)[..., 0] for i, info in enumerate(plain.image_info)}
    for i, info in enumerate(context.image_info):
        subject, s = info["id"].rsplit("_s", 1)
        s = int(s.split(".")[0])
        image = context.load_image(i)
        below = grey_of.get(f"{subject}_s{s + 1:03d}.png", image[..., 1])  # edge: itself
        np.testing.assert_array_equal(image[..., 1], grey_of[info["id"]])
        np.testing.assert_array_equal(image[..., 2], below)
        if s > 0:
            np.testing.assert_array_equal(image[..., 0], grey_of[f"{subject}_s{s - 1:03d}.png"])


def test_training_refuses_images_of_the_other_input_kind(cohort, tmp_path):
    from spine.model_input import ModelInput
    from spine.train import check_prepared_input

    grey_input, rgb_input = ModelInput(), ModelInput(neighbour_channels=True)
    prepare(cohort, tmp_path / "grey", progress=False)
    summary = prepare(cohort, tmp_path / "rgb", progress=False, neighbour_channels=True)
    assert summary["input"] == {"neighbour_channels": True, "window_percentiles": [0.5, 99.5]}
    with pytest.raises(SpineInputError, match="--neighbour-channels"):
        check_prepared_input(tmp_path / "grey", rgb_input)
    with pytest.raises(SpineInputError, match="without --neighbour-channels"):
        check_prepared_input(tmp_path / "rgb", grey_input)
    check_prepared_input(tmp_path / "rgb", rgb_input)  # matching: accepted
    check_prepared_input(tmp_path / "grey", grey_input)
    # The same channels but another intensity window is another input too.
    with pytest.raises(SpineInputError, match=r"window percentiles \[1.0, 99.0\] vs \[0.5"):
        check_prepared_input(tmp_path / "grey", ModelInput(percentiles=(1.0, 99.0)))


def test_a_split_json_from_before_the_input_was_recorded_reads_as_its_channels(tmp_path):
    from spine.model_input import ModelInput
    from spine.train import check_prepared_input

    (tmp_path / "split.json").write_text(json.dumps({"neighbour_channels": True}))
    check_prepared_input(tmp_path, ModelInput(neighbour_channels=True))
    with pytest.raises(SpineInputError, match="without --neighbour-channels"):
        check_prepared_input(tmp_path, ModelInput())


REAL = Path(__file__).parents[2].parent / "shared" / "data" / "real"


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real data folder {REAL} is absent")
def test_real_data_split_is_by_subject_and_stratified():
    pairs = find_pairs(REAL)
    assert len(pairs) == 61
    split = split_subjects(pairs, 0.25, seed=0)
    val_sources = [source_of(s) for s in split["val"]]
    assert val_sources.count("chu2015") == 4 and val_sources.count("myosegmentum") == 11
    assert not set(split["train"]) & set(split["val"])


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real data folder {REAL} is absent")
def test_real_volume_exports_like_its_label_map(tmp_path):
    from spine.prepare import export_subject
    from spine.via import read_via, regions_to_masks
    from spine.volume import load_label_map, load_volume

    pair = [p for p in find_pairs(REAL) if p.subject == "myosegmentum_01"][0]
    entries = export_subject(pair.image, pair.labels, pair.subject, tmp_path, 20, 0)
    vol = load_volume(pair.image)
    labels = load_label_map(pair.labels, like=vol)
    entry = entries[len(entries) // 2]
    s = int(entry["filename"].rsplit("_s", 1)[1][:3])
    image = read_via({"k": entry})[0]
    masks = regions_to_masks(image.regions, labels.shape[1:])
    for k, value in enumerate(np.unique(labels[s][labels[s] > 0])):
        truth = labels[s] == value
        assert (masks[..., k] & truth).sum() / (masks[..., k] | truth).sum() >= 0.95


def test_a_failed_run_keeps_the_old_folders_and_leaves_no_temp_folder(
    cohort, tmp_path, monkeypatch
):
    import spine.prepare

    prepare(cohort, tmp_path, progress=False)
    before = sorted(p.name for p in (tmp_path / "train").iterdir())

    def broken(*args, **kwargs):
        raise SpineInputError("unreadable scan")

    monkeypatch.setattr(spine.prepare, "export_subject", broken)
    with pytest.raises(SpineInputError, match="unreadable scan"):
        prepare(cohort, tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == before
    assert not list(tmp_path.glob(".*"))  # the temp folder went with the error
