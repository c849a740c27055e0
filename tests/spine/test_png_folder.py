"""images/ + masks/ PNG folders (spine.png_folder), their training use (S1 class, ignore
regions over unlabelled vertebrae) and single-slice input through the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrcnn.boxes import compute_overlaps
from mrcnn.data import build_rpn_targets, load_image_gt
from spine.config import SpineConfig
from spine.dataset import CROWD_CLASS_ID, S1_CLASS_ID, SpineDataset
from spine.errors import AnnotationError
from spine.png_folder import (
    SPIDER_CANAL,
    SPIDER_DISC,
    SPIDER_VERTEBRA,
    read_png_folder,
    spider_bodies,
    split_patients,
)
from spine.volume import load_image_slice, volume_from_image

SIZE = 128
# Five stacked bodies (rows y1, y2) at columns 40-80: the top one is NOT labelled.
BODIES = [(4, 22), (28, 46), (52, 70), (76, 94), (100, 118)]


def _write_levels_folder(folder: Path, n_images: int = 2, table: str | None = None) -> None:
    """Images with five bright bodies; masks label the lower four as L3, L4, L5, S1 (3..6)."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(n_images):
        image = np.full((SIZE, SIZE), 30, np.uint8)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        for k, (y1, y2) in enumerate(BODIES):
            image[y1:y2, 40:80] = 200
            if k > 0:
                mask[y1:y2, 40:80] = k + 2  # 3 L3, 4 L4, 5 L5, 6 S1
        Image.fromarray(image).save(folder / "images" / f"P{i:02d}_S1.png")
        Image.fromarray(mask).save(folder / "masks" / f"P{i:02d}_S1.png")
    if table:
        (folder / "levels.csv").write_text(table)


def test_level_folder_reads_bodies_top_to_bottom_with_names(tmp_path):
    _write_levels_folder(tmp_path)
    items = read_png_folder(tmp_path)
    assert [i.patient for i in items] == ["P00", "P01"] and items[0].kind == "levels"
    bodies = items[0].load_bodies()
    assert bodies.levels == ["L3", "L4", "L5", "S1"]
    assert bodies.unlabelled_above and not bodies.unlabelled_below  # nothing below S1
    assert np.array_equal(np.unique(bodies.labels), [0, 1, 2, 3, 4])
    assert bodies.labels[BODIES[1][0] + 2, 50] == 1  # the top labelled body is label 1


def test_level_table_file_overrides_the_default(tmp_path):
    _write_levels_folder(tmp_path, table="value,level\n3,T12\n4,L1\n5,L2\n6,L3\n")
    bodies = read_png_folder(tmp_path)[0].load_bodies()
    assert bodies.levels == ["T12", "L1", "L2", "L3"] and bodies.unlabelled_below


def test_bad_folders_are_annotation_errors(tmp_path):
    with pytest.raises(AnnotationError, match="images/ and masks/"):
        read_png_folder(tmp_path)
    _write_levels_folder(tmp_path)
    (tmp_path / "masks" / "P01_S1.png").unlink()
    with pytest.raises(AnnotationError, match="no mask"):
        read_png_folder(tmp_path)
    (tmp_path / "masks" / "P01_S1.png").write_bytes(b"")
    (tmp_path / "levels.csv").write_text("value,level\n3,L9\n")
    with pytest.raises(AnnotationError, match="unknown level"):
        read_png_folder(tmp_path)


def test_patient_split_is_fixed_and_disjoint(tmp_path):
    _write_levels_folder(tmp_path, n_images=8)
    split = split_patients(tmp_path, seed=0)
    assert len(split["val"]) == 2 and len(split["train"]) == 6
    assert not set(split["val"]) & set(split["train"])
    assert split == split_patients(tmp_path, seed=0)


def _spider_mask() -> np.ndarray:
    """Semantic SPIDER-like mask: 3 bodies with posterior elements behind a canal, discs
    between them, and a sacrum piece below the lowest disc."""
    mask = np.zeros((160, 120), np.uint8)
    mask[:, 70:80] = SPIDER_CANAL
    for y1, y2 in ((10, 40), (50, 80), (90, 120), (130, 158)):
        mask[y1:y2, 20:65] = SPIDER_VERTEBRA  # body, anterior to the canal
        mask[y1 + 5 : y2 - 5, 65:70] = SPIDER_VERTEBRA  # pedicle touching the canal
        mask[y1 + 5 : y2 - 5, 82:110] = SPIDER_VERTEBRA  # posterior elements
    for y1, y2 in ((41, 49), (81, 89), (121, 129)):
        mask[y1:y2, 20:65] = SPIDER_DISC
    return mask


def test_spider_bodies_are_anterior_to_the_canal_and_named_from_l5():
    bodies = spider_bodies(_spider_mask(), min_area=100)
    assert bodies.levels == ["L3", "L4", "L5", "S1"]
    assert not bodies.unlabelled_above and not bodies.unlabelled_below
    assert bodies.labels[:, 80:].max() == 0  # posterior elements are not bodies
    assert (bodies.labels == 1).sum() == 30 * 45 + 20 * 5  # body plus the pedicle stub


def test_spider_folder_is_recognised_by_its_values(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    mask = _spider_mask()
    Image.fromarray(mask).save(tmp_path / "masks" / "107_t2_SPACE_slice53.png")
    Image.fromarray((mask > 0).astype(np.uint8) * 180).save(
        tmp_path / "images" / "107_t2_SPACE_slice53.png"
    )
    (item,) = read_png_folder(tmp_path)
    assert item.kind == "spider" and item.patient == "107"


def test_dataset_gives_s1_its_class_and_ignores_the_unlabelled_top(tmp_path):
    _write_levels_folder(tmp_path, n_images=1)
    ds = SpineDataset(neighbour_channels=True, with_s1=True)
    assert ds.load_png_folder(tmp_path, repeat=2) == 2
    ds.prepare()
    assert ds.class_names == ["BG", "vertebra", "S1"]
    image = ds.load_image(0)
    assert image.shape == (SIZE, SIZE, 3)  # a single slice: its neighbours are itself
    assert (image == image[..., 1:2]).all()
    masks, class_ids = ds.load_mask(0)
    assert class_ids.tolist() == [1, 1, 1, S1_CLASS_ID, CROWD_CLASS_ID]
    crowd = masks[..., -1]
    top = BODIES[0]
    assert crowd[top[0] : top[1], 40:80].all()  # covers the unlabelled body above
    assert not (crowd & masks[..., :-1].any(-1)).any()  # and none of the labelled ones


@pytest.mark.parametrize("ignore", [True, False])
def test_an_unlabelled_vertebra_creates_no_background_targets(tmp_path, tiny_config, ignore):
    folder = tmp_path / "data"
    _write_levels_folder(folder, n_images=1)
    config = SpineConfig.from_toml(
        tiny_config, NUM_CLASSES=3, IMAGE_MIN_DIM=SIZE, IMAGE_MAX_DIM=SIZE,
        RPN_TRAIN_ANCHORS_PER_IMAGE=100000,  # no subsampling: every negative anchor shows
    )  # fmt: skip
    from mrcnn import boxes

    ds = SpineDataset(with_s1=True, ignore_unlabelled=ignore)
    ds.load_png_folder(folder)
    ds.prepare()
    image, _, class_ids, bbox, _ = load_image_gt(ds, config, 0)
    anchors = boxes.generate_pyramid_anchors(
        config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
        boxes.compute_backbone_shapes(config, image.shape), config.BACKBONE_STRIDES,
        config.RPN_ANCHOR_STRIDE,
    )  # fmt: skip
    rpn_match, _ = build_rpn_targets(image.shape, anchors, class_ids, bbox, config)
    top = np.array([[BODIES[0][0], 40, BODIES[0][1], 80]], np.float32)
    on_top = compute_overlaps(anchors, top)[:, 0] >= 0.3  # anchors that see the top body
    negatives_on_top = int((rpn_match[on_top] == -1).sum())
    if ignore:
        assert negatives_on_top == 0
    else:  # the same body taught as background: the failure the ignore regions prevent
        assert negatives_on_top > 0


def test_png_slice_loads_as_a_one_slice_volume(tmp_path):
    _write_levels_folder(tmp_path, n_images=1)
    path = tmp_path / "images" / "P00_S1.png"
    volume = load_image_slice(path.read_bytes(), name="p00")
    assert volume.shape == (1, SIZE, SIZE) and volume.name == "p00"
    np.testing.assert_array_equal(volume.data[0], np.asarray(Image.open(path), np.float32))
    assert volume_from_image(np.arange(60.0).reshape(4, 5, 3)).shape == (1, 4, 5)
    from spine.errors import InvalidScanError

    with pytest.raises(InvalidScanError, match="PNG"):
        load_image_slice(b"not an image")
