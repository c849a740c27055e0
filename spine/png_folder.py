"""images/ + masks/ PNG folders: one slice per image with its label map, read as named bodies.

Two kinds of mask, told apart by the folder:
- level label maps (e.g. clinical_t1): each label value is one vertebral body of a known
  level; the table value -> level comes from the folder's levels.csv (columns value,level)
  or, without one, DEFAULT_LEVEL_TABLE (1..5 = L1..L5, 6 = S1).
- SPIDER-style semantic maps (values 76 vertebra, 29 disc, 150 canal): the bodies are the
  parts of the vertebra label anterior to the canal, split into bodies by the discs; the
  lowest labelled body above the lowest disc is L5 and a body below that disc is S1.
Patients come from index.csv (column patient) when present, else from the file name.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from spine.errors import AnnotationError
from spine.folders import INDEX_FILENAME, PNG_IMAGES, PNG_MASKS, PNG_SUFFIX, is_png_folder
from spine.levels import SPINE_LEVELS

DEFAULT_LEVEL_TABLE: dict[int, str] = {1: "L1", 2: "L2", 3: "L3", 4: "L4", 5: "L5", 6: "S1"}
LEVEL_TABLE_FILE = "levels.csv"
# SPIDER semantic values.
SPIDER_VERTEBRA, SPIDER_DISC, SPIDER_CANAL = 76, 29, 150
SPIDER_VALUES = {0, SPIDER_VERTEBRA, SPIDER_DISC, SPIDER_CANAL}
# A body component smaller than this (pixels) is a sliver at the field's edge or a pedicle.
SPIDER_MIN_BODY_AREA = 400


@dataclass
class SliceBodies:
    """The labelled bodies of one slice.

    labels: int32 [H, W], 0 background, k the k-th body from the top. levels: a name per body
    ("" where the level is not known). unlabelled_above / unlabelled_below: vertebrae above the
    top / below the lowest labelled body exist in the image but carry no label (training must
    ignore them, not learn them as background).
    """

    labels: np.ndarray
    levels: list[str]
    unlabelled_above: bool = True
    unlabelled_below: bool = False


@dataclass
class PngSlice:
    """One image of a PNG folder: paths, patient, and how its mask is read."""

    name: str
    patient: str
    image_path: Path
    mask_path: Path
    kind: str  # "levels" | "spider"
    level_table: dict[int, str] = field(default_factory=dict)

    def load_image(self) -> np.ndarray:
        """uint8 [H, W] grey."""
        with Image.open(self.image_path) as pil:
            return np.asarray(pil.convert("L"))

    def load_mask(self) -> np.ndarray:
        """The mask as stored [H, W] (level values or SPIDER's semantic values)."""
        with Image.open(self.mask_path) as pil:
            mask = np.asarray(pil)
        return mask[..., 0] if mask.ndim == 3 else mask

    def bodies(self, mask: np.ndarray) -> SliceBodies:
        """The named bodies of this slice's stored mask (load_mask)."""
        if self.kind == "spider":
            return spider_bodies(mask)
        return level_bodies(mask, self.level_table)

    def load_bodies(self) -> SliceBodies:
        return self.bodies(self.load_mask())


def read_level_table(folder: Path) -> dict[int, str]:
    """value -> level from folder/levels.csv, else DEFAULT_LEVEL_TABLE."""
    path = folder / LEVEL_TABLE_FILE
    if not path.is_file():
        return dict(DEFAULT_LEVEL_TABLE)
    table: dict[int, str] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                value, level = int(row["value"]), row["level"].strip()
            except (KeyError, ValueError, AttributeError) as err:
                raise AnnotationError(
                    f"{path}: each row needs an integer 'value' and a 'level' ({err})"
                ) from err
            if level not in SPINE_LEVELS:
                raise AnnotationError(f"{path}: unknown level {level!r} for value {value}")
            table[value] = level
    if not table:
        raise AnnotationError(f"{path} has no rows (columns value,level)")
    return table


def _patients(folder: Path) -> dict[str, str]:
    """image file name -> patient, from index.csv if it has the columns image and patient."""
    path = folder / INDEX_FILENAME
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "image" not in rows[0] or "patient" not in rows[0]:
        return {}
    return {Path(r["image"]).name: r["patient"] for r in rows}


def patient_from_name(stem: str) -> str:
    """'107_t2_SPACE_slice53' -> '107'; 'T1_0001_S8' -> 'T1_0001'; otherwise the stem."""
    match = re.match(r"^(\d+)_", stem) or re.match(r"^(.+?)_(?:S|slice)\d+$", stem)
    return match.group(1) if match else stem


def read_png_folder(folder: str | Path) -> list[PngSlice]:
    """Every image of an images/ + masks/ folder with its mask (same file name)."""
    folder = Path(folder)
    if not is_png_folder(folder):
        raise AnnotationError(f"{folder} needs images/ and masks/ subfolders of PNG slices")
    images = sorted(p for p in (folder / PNG_IMAGES).iterdir() if p.suffix.lower() == PNG_SUFFIX)
    missing = [p.name for p in images if not (folder / PNG_MASKS / p.name).is_file()]
    if missing:
        raise AnnotationError(
            f"{len(missing)} image(s) in {folder}/images have no mask of the same name in "
            f"masks/: {', '.join(missing[:5])}"
        )
    if not images:
        raise AnnotationError(f"no PNG images in {folder}/images")
    kind = _mask_kind(folder, folder / PNG_MASKS / images[0].name)
    table = read_level_table(folder) if kind == "levels" else {}
    patients = _patients(folder)
    return [
        PngSlice(
            name=p.stem, patient=patients.get(p.name) or patient_from_name(p.stem),
            image_path=p, mask_path=folder / PNG_MASKS / p.name, kind=kind, level_table=table,
        )  # fmt: skip
        for p in images
    ]


def _mask_kind(folder: Path, first_mask: Path) -> str:
    """'spider' when the folder has no level table and its masks hold SPIDER's values."""
    if (folder / LEVEL_TABLE_FILE).is_file():
        return "levels"
    values = set(np.unique(np.asarray(Image.open(first_mask))).tolist())
    return "spider" if SPIDER_VERTEBRA in values and values <= SPIDER_VALUES else "levels"


def level_bodies(mask: np.ndarray, table: dict[int, str]) -> SliceBodies:
    """A level label map -> bodies top to bottom with their names.

    Vertebrae above the table's highest level are unlabelled; below its lowest too, unless
    the lowest is S1 (below S1 the sacrum continues, no more bodies).
    """
    values = [v for v in np.unique(mask).tolist() if v in table]
    order = sorted(values, key=lambda v: SPINE_LEVELS.index(table[v]))
    labels = np.zeros(mask.shape, np.int32)
    for k, value in enumerate(order, start=1):
        labels[mask == value] = k
    ranks = [SPINE_LEVELS.index(level) for level in table.values()]
    return SliceBodies(
        labels=labels,
        levels=[table[v] for v in order],
        unlabelled_above=True,
        unlabelled_below=SPINE_LEVELS[max(ranks)] != "S1",
    )


def spider_bodies(mask: np.ndarray, min_area: int = SPIDER_MIN_BODY_AREA) -> SliceBodies:
    """SPIDER semantic map [H, W] -> vertebral bodies (anterior to the canal) with names.

    The canal's front edge (its most anterior column per row, interpolated over rows without
    canal) cuts the body from the pedicles and posterior elements; bodies are the connected
    components left (>= min_area px). Names count up from L5, the lowest body above the
    lowest disc; a body below that disc is S1. Slices without canal give no bodies.
    """
    vertebra = mask == SPIDER_VERTEBRA
    canal = mask == SPIDER_CANAL
    height, width = mask.shape
    rows = np.flatnonzero(canal.any(axis=1))
    if rows.size == 0:
        return SliceBodies(np.zeros(mask.shape, np.int32), [], True, True)
    first_col = np.argmax(canal, axis=1)  # most anterior canal column per row
    front = np.interp(np.arange(height), rows, first_col[rows])  # [H]
    body = vertebra & (np.arange(width)[None, :] < front[:, None])
    count, comp, stats, centres = cv2.connectedComponentsWithStats(
        body.astype(np.uint8), connectivity=4
    )
    keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    keep.sort(key=lambda i: centres[i, 1])  # top to bottom
    labels = np.zeros(mask.shape, np.int32)
    for k, i in enumerate(keep, start=1):
        labels[comp == i] = k
    # The lowest disc's centre row: bodies below it are sacral (S1).
    lowest_disc = _lowest_component_row(mask == SPIDER_DISC)
    below = [k for k, i in enumerate(keep) if centres[i, 1] > lowest_disc]
    n_lumbar = len(keep) - len(below)
    names = [SPINE_LEVELS[SPINE_LEVELS.index("L5") - (n_lumbar - 1 - k)] for k in range(n_lumbar)]
    names += ["S1"] + [""] * (len(below) - 1) if below else []
    return SliceBodies(labels, names, unlabelled_above=False, unlabelled_below=not below)


def _lowest_component_row(region: np.ndarray) -> float:
    """Centre row of the lowest connected component of a bool [H, W] region."""
    count, _, stats, centres = cv2.connectedComponentsWithStats(
        region.astype(np.uint8), connectivity=8
    )
    big = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= 50]
    return float(max(centres[i, 1] for i in big)) if big else np.inf


def split_patients(folder: str | Path, seed: int = 0, val_fraction: float = 0.25) -> dict:
    """{"train": [...], "val": [...]}: a PNG folder's patients split 75/25 with a fixed seed
    (the split spine-train and spine-evaluate share). One folder is one source, so there is
    no stratification; with one patient everything is training."""
    patients = sorted({item.patient for item in read_png_folder(folder)})
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    n_val = max(1, int(round(len(order) * val_fraction))) if len(order) >= 2 else 0
    return {"train": sorted(order[n_val:]), "val": sorted(order[:n_val])}
