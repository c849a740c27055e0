"""spine.deformity and spine-deform: simulated fractures and slipped levels move image and
labels together, by the amounts asked for, and leave the rest of the spine alone."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from spine import deform_folder
from spine.augment import SpineAugmenter
from spine.deformity import (
    Deformity,
    body_indices,
    deform,
    height_loss,
    random_fracture,
    random_listhesis,
)
from spine.png_folder import read_png_folder

# A straight column of 5 bodies, 30 px tall and 40 px deep (rounded corners, so no body is an
# exact box), discs 10 px, in a 256 x 160 image; anterior on the left.
BODY_H, BODY_D, DISC, TOP, LEFT = 30, 40, 10, 20, 50


def column(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """image uint8 [256, 160, 3] (bodies 200, the rest 40) and masks bool [256, 160, n]."""
    masks = np.zeros((256, 160, n), bool)
    for k in range(n):
        y = TOP + k * (BODY_H + DISC)
        body = np.zeros((256, 160), np.uint8)
        cv2.rectangle(body, (LEFT + 2, y), (LEFT + BODY_D - 3, y + BODY_H - 1), 1, -1)
        cv2.rectangle(body, (LEFT, y + 2), (LEFT + BODY_D - 1, y + BODY_H - 3), 1, -1)
        masks[:, :, k] = body > 0
    image = np.where(masks.any(-1), 200, 40).astype(np.uint8)
    return np.repeat(image[..., None], 3, -1), masks


def heights(mask: np.ndarray) -> tuple[int, int]:
    """Rows covered at the anterior (left) and posterior (right) wall, 4 px inside."""
    cols = np.flatnonzero(mask.any(0))
    return int(mask[:, cols[0] + 4].sum()), int(mask[:, cols[-1] - 4].sum())


def test_body_indices_skip_boxes_and_slivers_and_run_top_down():
    _, masks = column(3)
    box = np.zeros((256, 160, 1), bool)
    box[0:15, 40:100] = True  # an ignore region: an exact box
    sliver = np.zeros((256, 160, 1), bool)
    sliver[200:204, 60:66] = True  # 24 px
    stacked = np.concatenate([masks[..., ::-1], box, sliver], -1)  # bottom body first
    assert body_indices(stacked) == [2, 1, 0]


@pytest.mark.parametrize("kind", ["wedge", "crush"])
def test_fracture_takes_the_height_asked_for_and_spares_the_bodies_below(kind):
    image, masks = column()
    out_image, out = deform(image, masks, Deformity(kind=kind, grade=0.4, body=2))
    front, back = heights(out[:, :, 2])
    if kind == "wedge":  # 40 % off the anterior wall, none off the posterior wall
        assert front == pytest.approx(BODY_H * 0.6, abs=2.5)
        assert back == pytest.approx(BODY_H, abs=2)
    else:
        assert front == pytest.approx(BODY_H * 0.6, abs=2) and back == front
    np.testing.assert_array_equal(out[:, :, 3:], masks[:, :, 3:])  # the column below: untouched
    # The labels still lie on the bodies of the warped image.
    bright = out_image[..., 0] > 120
    assert (bright & out.any(-1)).sum() / (bright | out.any(-1)).sum() > 0.97


def test_crush_moves_the_body_above_down_with_its_shape():
    _, masks = column()
    _, out = deform(np.zeros((256, 160, 3), np.uint8), masks,
                    Deformity(kind="crush", grade=0.4, body=2))  # fmt: skip
    lost = 0.4 * (BODY_H - 1)  # the extent s1 - s0 between the end rows' centres
    drop = np.mean(np.nonzero(out[:, :, 1])[0]) - np.mean(np.nonzero(masks[:, :, 1])[0])
    # The column above follows the sunken end plate, tapered linearly from the image's top row
    # (no shift) to the end plate's row (the whole loss): the body above's centre row, 74.5,
    # lies 74.5 / 100 of the way.
    above_centre, end_plate = TOP + BODY_H + DISC + (BODY_H - 1) / 2, TOP + 2 * (BODY_H + DISC)
    assert drop == pytest.approx(lost * above_centre / end_plate, abs=0.5)
    # ... and is stretched along the spine by the taper's slope, 1 + lost / 100, not bent.
    ratio = out[:, :, 1].sum() / masks[:, :, 1].sum()
    assert ratio == pytest.approx(1 + lost / end_plate, abs=0.02)
    assert heights(out[:, :, 1])[0] == heights(out[:, :, 1])[1]


def test_height_loss_profiles():
    t = np.linspace(0.0, 10.0, 11)  # posterior wall 0 .. anterior wall 10
    np.testing.assert_allclose(height_loss("wedge", t, 0, 10, 0.4), 0.04 * t)
    biconcave = height_loss("biconcave", t, 0, 10, 0.4)
    assert biconcave[0] == biconcave[-1] == 0 and biconcave[5] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="unknown fracture kind"):
        height_loss("burst", t, 0, 10, 0.4)


def test_listhesis_slides_the_upper_spine_forward_over_the_lower_body():
    image, masks = column()
    out_image, out = deform(image, masks, Deformity(kind="listhesis", grade=0.25, body=3))
    def front(mask: np.ndarray) -> float:
        return float(np.flatnonzero(mask.any(0))[0])
    slip = 0.25 * (BODY_D - 1)  # of the lower body's depth (its end columns' centres)
    for k in range(4):  # the slipped body and all above it: anterior = towards -x
        assert front(masks[:, :, k]) - front(out[:, :, k]) == pytest.approx(slip, abs=1.0)
    np.testing.assert_array_equal(out[:, :, 4], masks[:, :, 4])
    bright = out_image[..., 0] > 120
    assert (bright & out.any(-1)).sum() / (bright | out.any(-1)).sum() > 0.97


def test_random_choices_need_bodies():
    rng = np.random.default_rng(0)
    assert random_fracture(np.zeros((64, 64, 0), bool), rng) is None
    _, masks = column(1)
    assert random_listhesis(masks, rng) is None
    _, masks = column()
    fracture = random_fracture(masks, rng)
    assert fracture.kind in ("wedge", "biconcave", "crush") and 0.2 <= fracture.grade <= 0.5
    listhesis = random_listhesis(masks, rng)
    assert listhesis.kind == "listhesis" and listhesis.body in range(4)


def test_augmenter_deforms_only_when_asked_and_keeps_its_stream_otherwise():
    image, masks = column()
    out, out_masks = SpineAugmenter(seed=0, p_affine=0, p_fracture=1.0)(image, masks)
    assert out_masks.sum() < masks.sum()  # one body lost height
    plain_a = SpineAugmenter(seed=5)(image, masks)
    plain_b = SpineAugmenter(seed=5, p_fracture=0.0, p_listhesis=0.0)(image, masks)
    np.testing.assert_array_equal(plain_a[0], plain_b[0])


def png_folder(folder) -> np.ndarray:
    """Two patients' slices of column() as an images/ + masks/ folder, bodies L2..S1 by
    value (the default level table). Returns the label map."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    image, masks = column()
    labels = np.zeros((256, 160), np.uint8)
    for k in range(5):
        labels[masks[:, :, k]] = k + 2
    rows = ["image,mask,patient"]
    for name in ("P1_S1", "P2_S1"):
        Image.fromarray(image[..., 0]).save(folder / "images" / f"{name}.png")
        Image.fromarray(labels).save(folder / "masks" / f"{name}.png")
        rows.append(f"images/{name}.png,masks/{name}.png,{name[:2]}")
    (folder / "index.csv").write_text("\n".join(rows) + "\n")
    return labels


def test_spine_deform_writes_a_labelled_copy_with_the_same_patients(tmp_path):
    data = tmp_path / "png"
    labels = png_folder(data)
    out = tmp_path / "deformed"
    assert deform_folder.main(["--data", str(data), "--kind", "fracture", "--out", str(out),
                               "--no-progress"]) == 0  # fmt: skip
    copy = read_png_folder(out)
    assert [(s.name, s.patient) for s in copy] == [("P1_S1", "P1"), ("P2_S1", "P2")]
    with (out / "deformities.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["kind"] in ("wedge", "biconcave", "crush") for r in table] == [True, True]
    assert {r["level"] for r in table} <= {"L2", "L3", "L4", "L5", "S1"}
    warped = np.asarray(Image.open(out / "masks" / "P1_S1.png"))
    assert set(np.unique(warped)) == set(np.unique(labels))  # the level values survive
    assert (warped > 0).sum() < (labels > 0).sum()  # a body lost height
    picture = np.asarray(Image.open(out / "overview.png"))
    assert picture.shape == (2 * 256, 2 * 160, 3)  # two slices, before and after side by side
    assert deform_folder.main(["--data", str(data), "--kind", "fracture", "--out", str(data)]) == 2


def test_spine_deform_moves_a_volume_through_all_its_slices(tmp_path):
    import nibabel as nib

    from spine.phantom import make_phantom
    from spine.volume import load_label_map, load_volume

    make_phantom(3, size=128, num_slices=6, orientation="LPS", name="ph").save(tmp_path / "in")
    out = tmp_path / "out"
    assert deform_folder.main(["--data", str(tmp_path / "in"), "--kind", "listhesis",
                               "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    with (out / "deformities.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["kind"] == "listhesis" and row["level"].startswith("label ")
    assert np.asarray(Image.open(out / "overview.png")).shape[0] == 256  # one volume
    before = nib.load(tmp_path / "in" / "ph.nii.gz")
    after = nib.load(out / "ph.nii.gz")
    np.testing.assert_allclose(after.affine, before.affine)  # the scan's own geometry kept
    assert after.get_data_dtype() == before.get_data_dtype()
    volume = load_volume(out / "ph.nii.gz")
    labels = load_label_map(out / "ph_vertebrae.nii.gz", like=volume)
    original = load_label_map(tmp_path / "in" / "ph_vertebrae.nii.gz", like=volume)
    slipped = int(row["level"].split()[1])
    moved = [s for s in range(labels.shape[0]) if (original[s] == slipped).any()
             and not np.array_equal(labels[s] == slipped, original[s] == slipped)]  # fmt: skip
    assert len(moved) == sum((original[s] == slipped).any() for s in range(labels.shape[0]))
    assert set(np.unique(labels)) == set(np.unique(original))
    # spine-evaluate scores that one body apart.
    from spine.evaluate import main

    assert main(["--data", str(out), "--baseline-only", "--out", str(tmp_path / "report"),
                 "--no-progress"]) == 0  # fmt: skip
    figures = json.loads((tmp_path / "report" / "metrics.json").read_text())["deformed"]
    assert figures["baseline"]["deformed"]["bodies"] == 1
    assert figures["baseline"]["per_kind"].keys() == {"listhesis"}


def test_spine_evaluate_scores_the_deformed_bodies_apart(tmp_path):
    from spine.evaluate import main

    png_folder(tmp_path / "png")
    deformed = tmp_path / "deformed"
    assert deform_folder.main(["--data", str(tmp_path / "png"), "--kind", "fracture",
                               "--out", str(deformed), "--no-progress"]) == 0  # fmt: skip
    assert main(["--data", str(deformed), "--baseline-only", "--subset", "all",
                 "--out", str(tmp_path / "report"), "--no-progress"]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    figures = metrics["deformed"]["baseline"]
    assert figures["deformed"]["bodies"] == 2 and figures["other"]["bodies"] == 8
    assert sum(k["bodies"] for k in figures["per_kind"].values()) == 2
    assert "## Deformed bodies (spine-deform)" in (tmp_path / "report" / "REPORT.md").read_text()
    # An untouched folder has no deformed section.
    assert main(["--data", str(tmp_path / "png"), "--baseline-only", "--subset", "all",
                 "--out", str(tmp_path / "plain"), "--no-progress"]) == 0  # fmt: skip
    assert "deformed" not in json.loads((tmp_path / "plain" / "metrics.json").read_text())


def test_deformed_body_figures_are_means_over_the_right_bodies():
    from spine.evaluation.deformed import summarize_bodies

    bodies = [("wedge", True, 0.8, True), ("wedge", False, 0.9, True),
              ("crush", True, 0.2, False), ("crush", False, 1.0, True)]  # fmt: skip
    summary = summarize_bodies(bodies)
    assert summary["deformed"] == {"bodies": 2, "dice": pytest.approx(0.5), "found": 0.5}
    assert summary["other"]["dice"] == pytest.approx(0.95)
    assert summary["per_kind"]["crush"] == {"bodies": 1, "dice": 0.2, "found": 0.0}
    assert summarize_bodies([])["deformed"] == {"bodies": 0, "dice": None, "found": None}
