"""What a data folder holds: the one place that knows file names, suffixes and layouts.

spine-prepare, spine-train and spine-evaluate (and spine-segment for scan suffixes) ask this
module, so a folder one command accepts, every command accepts. Layouts (folder_kind):
- "volumes": NIfTI scans with label maps, NAME.nii[.gz] + NAME_vertebrae.nii[.gz] in one
  folder, or images/ + masks/ subfolders of NIfTI files matched by name (find_pairs);
- "png": images/ + masks/ subfolders of PNG slices with label maps (spine.png_folder);
- "prepared": spine-prepare's output, train/ and val/ VIA folders (and split.json);
- "via": slice images with VGG Image Annotator JSON (spine.dataset.load_via_folder).
A subject's data source is its name without the trailing number (source_of); splits are by
subject, stratified by source (split_subjects).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from spine.errors import SpineInputError

NIFTI_GZ_SUFFIX = ".nii.gz"  # every NIfTI file the commands write (and the shipped example)
NIFTI_SUFFIXES = (".nii", NIFTI_GZ_SUFFIX)
DICOM_FILE_SUFFIXES = (".dcm", ".dicom", ".ima")  # a DICOM file (many have no suffix at all)
DICOM_SUFFIXES = (".zip", *DICOM_FILE_SUFFIXES)  # a file read as a DICOM input (a folder too)
PNG_SUFFIX = ".png"  # slice images the commands write (exports, spine-prepare), PNG folders
IMAGE_SUFFIXES = (PNG_SUFFIX, ".jpg", ".jpeg")  # a slice image read (or written) as PNG/JPEG
SCAN_SUFFIXES = (*NIFTI_SUFFIXES, *DICOM_SUFFIXES, *IMAGE_SUFFIXES)  # what an upload may be
LABEL_MARK = "_vertebrae"  # NAME_vertebrae.nii.gz is the label map of NAME.nii.gz
LABEL_SUFFIXES = tuple(LABEL_MARK + s for s in NIFTI_SUFFIXES)
LEVELS_MARK = "_levels.json"  # NAME_levels.json names the bodies of NAME's label map
PNG_IMAGES, PNG_MASKS = "images", "masks"  # the PNG layout's subfolders (exact names)
VIA_FILENAME = "via_region_data.json"  # the name the paper's training code expects
SPLIT_FILENAME = "split.json"  # spine-prepare's split and input description
INDEX_FILENAME = "index.csv"  # a folder's table of images (levels, patients)
_IMAGE_DIRS = ("images", "image", "img", "mr", "scans")
_MASK_DIRS = ("masks", "mask", "labels", "label", "seg", "segmentations")


class VolumePair(NamedTuple):
    """One subject's scan and label map. Unpacks as (subject, image, labels)."""

    subject: str
    image: Path
    labels: Path

    @property
    def source(self) -> str:
        """The data source (source_of the subject): chu2015_07 -> chu2015."""
        return source_of(self.subject)


def is_nifti(path: str | Path) -> bool:
    """True for a .nii or .nii.gz file name."""
    return Path(path).name.endswith(NIFTI_SUFFIXES)


def is_label_map(path: str | Path) -> bool:
    """True for NAME_vertebrae.nii[.gz], the label-map naming."""
    return Path(path).name.endswith(LABEL_SUFFIXES)


def nifti_stem(path: str | Path) -> str:
    """The name without .nii.gz / .nii (what its Volume is called); other names: the stem."""
    name = Path(path).name
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):  # .nii.gz before .nii
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def nifti_name(stem: str) -> str:
    """The file name of a scan the commands write: NAME -> NAME.nii.gz."""
    return f"{stem}{NIFTI_GZ_SUFFIX}"


def label_map_name(stem: str) -> str:
    """The file name of a scan's label map: NAME -> NAME_vertebrae.nii.gz."""
    return nifti_name(stem + LABEL_MARK)


def levels_name(stem: str) -> str:
    """The file name of the level names beside a label map: NAME -> NAME_levels.json."""
    return f"{stem}{LEVELS_MARK}"


def slice_stem(name: str, index: int) -> str:
    """The name of one slice of volume NAME, without a suffix: NAME_s007."""
    return f"{name}_s{index:03d}"


def slice_image_name(name: str, index: int, suffix: str = PNG_SUFFIX) -> str:
    """The file name of a slice image (exports, spine-prepare): NAME_s007.png."""
    return slice_stem(name, index) + suffix


def source_of(subject: str) -> str:
    """A subject's data source: its name without the trailing _NN ('chu2015_04' -> 'chu2015')."""
    return re.sub(r"[_-]?\d+$", "", subject) or subject


def is_png_folder(folder: str | Path) -> bool:
    """True for a folder with images/ and masks/ subfolders of PNG slices (a folder whose
    images/ holds NIfTI volumes is a "volumes" folder)."""
    folder = Path(folder)
    images, masks = folder / PNG_IMAGES, folder / PNG_MASKS
    if not (images.is_dir() and masks.is_dir()):
        return False
    return not any(is_nifti(p) for p in images.iterdir())


def folder_kind(folder: str | Path) -> str:
    """"png", "prepared", "via" or "volumes" (see the module docstring).

    Raises SpineInputError when folder is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SpineInputError(f"data folder not found: {folder}")
    if is_png_folder(folder):
        return "png"
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        return "prepared"
    if (folder / VIA_FILENAME).is_file():
        return "via"
    return "volumes"


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p))


def _subject_key(stem: str) -> str:
    key = re.sub(
        r"(^|[_-])(mask|masks|seg|label|labels|vertebrae|image|img|t2)(?=$|[_-])", "", stem.lower()
    )
    return key.strip("_-")


def find_pairs(
    src: str | Path, split: str | Path | None = None, subset: str | None = None
) -> list[VolumePair]:
    """(subject, image, label map) VolumePairs under src, sorted by subject; with split, only
    the subjects of one subset (default "val") of that split.json.

    NAME.nii[.gz] + NAME_vertebrae.nii[.gz] in one folder; else images/ + masks/ subfolders
    whose files match after dropping mask/seg/label words (Case1.nii.gz <-> mask_case1.nii.gz).
    Raises SpineInputError for a missing folder, a folder without pairs, or a bad split.
    """
    src = Path(src)
    if not src.is_dir():
        raise SpineInputError(f"data folder not found: {src}")
    stems = {nifti_stem(p): p for p in _nifti_files(src)}
    pairs = [
        VolumePair(stem, path, stems[stem + LABEL_MARK])
        for stem, path in stems.items()
        if not stem.endswith(LABEL_MARK) and stem + LABEL_MARK in stems
    ]
    if not pairs:
        subdirs = {p.name.lower(): p for p in src.iterdir() if p.is_dir()}
        img_dir = next((subdirs[d] for d in _IMAGE_DIRS if d in subdirs), None)
        mask_dir = next((subdirs[d] for d in _MASK_DIRS if d in subdirs), None)
        if img_dir is not None and mask_dir is not None:
            masks = {_subject_key(nifti_stem(p)): p for p in _nifti_files(mask_dir)}
            for p in _nifti_files(img_dir):
                key = _subject_key(nifti_stem(p))
                if key in masks:
                    pairs.append(VolumePair(nifti_stem(p), p, masks[key]))
    if not pairs:
        raise SpineInputError(
            f"No scan/label-map pairs in {src}: expected NAME.nii.gz (or .nii) with "
            f"NAME{LABEL_MARK}.nii.gz, or images/ and masks/ subfolders with matching file names"
        )
    pairs = sorted(pairs)
    if split is None:
        if subset is not None:
            raise SpineInputError("--subset needs --split (the split.json of spine-prepare).")
        return pairs
    wanted = split_subset(Path(split), subset or "val")
    chosen = [p for p in pairs if p.subject in wanted or p.image.name in wanted]
    if not chosen:
        raise SpineInputError(
            f"None of the {len(wanted)} subjects of subset '{subset}' in "
            f"{split} has a volume pair in {src}."
        )
    return chosen


def split_subset(path: Path, subset: str) -> set[str]:
    """Subject names of one subset of a split.json ({subset: [...]} or nested under a key),
    each also without its NIfTI suffix."""
    if not path.is_file():
        raise SpineInputError(
            f"Split file not found: {path}. Pass the split.json written by spine-prepare."
        )
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpineInputError(f"{path} is not a valid JSON split file: {exc}") from exc
    for table in (doc, doc.get("subjects"), doc.get("splits")) if isinstance(doc, dict) else ():
        if isinstance(table, dict) and isinstance(table.get(subset), list):
            names = {str(n) for n in table[subset]}
            return names | {nifti_stem(n) for n in names}
    raise SpineInputError(f"{path} has no subset '{subset}' (a list of subjects).")


def split_subjects(
    subjects: list[str] | list[VolumePair], val_fraction: float = 0.25, seed: int = 0
) -> dict[str, list[str]]:
    """Split subjects into train/val per source (stratified), reproducibly for a seed.

    Each source with >= 2 subjects gives round(n * val_fraction) (at least 1) to val.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise SpineInputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    names = [s.subject if isinstance(s, VolumePair) else str(s) for s in subjects]
    groups: dict[str, list[str]] = {}
    for subject in sorted(set(names)):
        groups.setdefault(source_of(subject), []).append(subject)
    train, val = [], []
    for source in sorted(groups):
        members = groups[source]
        order = [members[i] for i in rng.permutation(len(members))]
        n_val = int(round(len(members) * val_fraction))
        if val_fraction > 0 and len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val += order[:n_val]
        train += order[n_val:]
    return {"train": sorted(train), "val": sorted(val)}


def parse_level_range(text: str) -> list[str] | None:
    """'T11-L5 (per source...)' -> ['T11', 'T12', 'L1', ..., 'L5']; None if not a range."""
    from spine.levels import SPINE_LEVELS

    match = re.search(r"\b([CTLS]\d{1,2})\s*-\s*([CTLS]\d{1,2})\b", text)
    if not match or not {match.group(1), match.group(2)} <= set(SPINE_LEVELS):
        return None
    a, b = SPINE_LEVELS.index(match.group(1)), SPINE_LEVELS.index(match.group(2))
    return SPINE_LEVELS[a : b + 1] if a <= b else None


def pair_levels(pair: VolumePair) -> list[str] | None:
    """Level names of a pair's ground-truth bodies, top to bottom, where the data says them:
    NAME_levels.json (phantoms) or the folder's index.csv (levels_top_to_bottom column)."""
    from spine.phantom import read_levels

    if (pair.labels.parent / levels_name(pair.subject)).is_file():
        return read_levels(pair.labels)
    index = pair.labels.parent / INDEX_FILENAME
    if index.is_file():
        with index.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("image") in (pair.image.name, pair.subject):
                    return parse_level_range(row.get("levels_top_to_bottom", ""))
    return None
