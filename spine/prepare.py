"""CLI: volumes + label maps -> PNG slice images + VIA JSON, split by subject.

    python -m spine.prepare --src DIR --out DIR [--seed 0] [--val-fraction 0.25] [--min-area 20]

Finds NAME.nii.gz + NAME_vertebrae.nii.gz pairs (phantoms and the real set use that naming;
also a folder with images/ + masks/ subfolders matched by file name), splits subjects into
train/val stratified by source (the name before the trailing _NN), reproducibly per seed,
and writes OUT/split.json, OUT/train/ and OUT/val/ (slice PNGs + via_region_data.json).
Slices without vertebrae are left out unless --empty-per-volume asks for some.
--neighbour-channels writes RGB images holding (slice above, slice, slice below), the input
of a model trained with neighbour_channels = true (spine.config); plain grey images otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from spine.errors import SpineInputError
from spine.via import VIA_FILENAME, masks_to_via_entry, write_via
from spine.volume import (
    atomic_write,
    label_instances,
    labelled_slices,
    load_label_map,
    load_volume,
    save_image,
    slice_channels,
    window_percentile,
)

logger = logging.getLogger(__name__)

LABEL_SUFFIX = "_vertebrae"
_IMAGE_DIRS = ("images", "image", "img", "mr", "scans")
_MASK_DIRS = ("masks", "mask", "labels", "label", "seg", "segmentations")


class VolumePair(NamedTuple):
    """One subject's scan and label map. Unpacks as (subject, image, labels)."""

    subject: str
    image: Path
    labels: Path


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else path.stem


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.endswith((".nii", ".nii.gz"))
    )


def find_pairs(src: str | Path) -> list[VolumePair]:
    """(subject, image, label map) VolumePairs under src, sorted by subject.

    NAME.nii.gz + NAME_vertebrae.nii.gz in one folder; else images/ + masks/ subfolders whose
    files match after dropping mask/seg/label words (e.g. Case1.nii.gz <-> mask_case1.nii.gz).
    """
    src = Path(src)
    if not src.is_dir():
        raise SpineInputError(f"--src {src} is not a folder")
    files = _nifti_files(src)
    stems = {_stem(p): p for p in files}
    pairs = [
        VolumePair(stem, path, stems[stem + LABEL_SUFFIX])
        for stem, path in stems.items()
        if not stem.endswith(LABEL_SUFFIX) and stem + LABEL_SUFFIX in stems
    ]
    if not pairs:
        subdirs = {p.name.lower(): p for p in src.iterdir() if p.is_dir()}
        img_dir = next((subdirs[d] for d in _IMAGE_DIRS if d in subdirs), None)
        mask_dir = next((subdirs[d] for d in _MASK_DIRS if d in subdirs), None)
        if img_dir is not None and mask_dir is not None:
            masks = {_subject_key(_stem(p)): p for p in _nifti_files(mask_dir)}
            for p in _nifti_files(img_dir):
                key = _subject_key(_stem(p))
                if key in masks:
                    pairs.append(VolumePair(_stem(p), p, masks[key]))
    if not pairs:
        raise SpineInputError(
            f"No image/label pairs in {src}: expected NAME.nii.gz with NAME{LABEL_SUFFIX}.nii.gz, "
            "or images/ and masks/ subfolders with matching file names"
        )
    return sorted(pairs)


def _subject_key(stem: str) -> str:
    key = re.sub(
        r"(^|[_-])(mask|masks|seg|label|labels|vertebrae|image|img|t2)(?=$|[_-])", "", stem.lower()
    )
    return key.strip("_-")


def source_of(subject: str) -> str:
    """A subject's data source: its name without the trailing _NN ('chu2015_04' -> 'chu2015')."""
    return re.sub(r"[_-]?\d+$", "", subject) or subject


def split_subjects(
    subjects: list[str], val_fraction: float = 0.25, seed: int = 0
) -> dict[str, list[str]]:
    """Split subjects into train/val per source (stratified), reproducibly for a seed.

    Each source with >= 2 subjects gives round(n * val_fraction) (at least 1) to val.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise SpineInputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    subjects = [s.subject if isinstance(s, VolumePair) else str(s) for s in subjects]
    groups: dict[str, list[str]] = {}
    for subject in sorted(set(subjects)):
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


def export_subject(
    image: Path,
    labels_path: Path,
    subject: str,
    out_dir: Path,
    min_area: int,
    empty_per_volume: int,
    neighbour_channels: bool = False,
) -> list[dict]:
    """Write one volume's slices as PNGs into out_dir (grey, or RGB with the neighbouring
    slices in R and B); returns their VIA 2 entries."""
    volume = load_volume(image, name=subject)
    labels = load_label_map(labels_path, like=volume)
    stack = window_percentile(volume.data)  # [S, H, W] uint8, one window for the volume
    entries = []
    for s in labelled_slices(labels, min_area, empty_per_volume):
        filename = f"{subject}_s{s:03d}.png"
        image = slice_channels(stack, s, neighbours=True) if neighbour_channels else stack[s]
        path = save_image(image, out_dir / filename)
        masks = label_instances(labels[s], min_area)  # [H, W, N], top to bottom
        entries.append(masks_to_via_entry(filename, masks, size=path.stat().st_size))
    return entries


def prepare(
    src: str | Path,
    out: str | Path,
    seed: int = 0,
    val_fraction: float = 0.25,
    min_area: int = 20,
    empty_per_volume: int = 0,
    progress: bool = True,
    neighbour_channels: bool = False,
) -> dict:
    """Run the whole preparation; returns the split summary also written to OUT/split.json."""
    from tqdm import tqdm

    out = Path(out)
    pairs = find_pairs(src)
    split = split_subjects(pairs, val_fraction, seed)
    by_subject = {p.subject: p for p in pairs}
    counts = {}
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(pairs), desc="prepare", unit="vol", disable=not progress)
    for part in ("train", "val"):
        tmp = out / f".{part}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        entries: list[dict] = []
        for subject in split[part]:
            _, image, labels = by_subject[subject]
            entries += export_subject(
                image, labels, subject, tmp, min_area, empty_per_volume, neighbour_channels
            )
            bar.update(1)
        write_via(entries, tmp / VIA_FILENAME)
        shutil.rmtree(out / part, ignore_errors=True)
        tmp.rename(out / part)  # the folder appears complete or not at all
        counts[part] = {"subjects": len(split[part]), "images": len(entries),
                        "instances": sum(len(e["regions"]) for e in entries)}  # fmt: skip
    bar.close()
    summary = {
        "seed": seed, "val_fraction": val_fraction, "min_area": min_area,
        "empty_per_volume": empty_per_volume, "neighbour_channels": neighbour_channels,
        "src": str(Path(src).resolve()),
        "sources": sorted({source_of(s) for s in by_subject}), "counts": counts, **split,
    }  # fmt: skip
    text = json.dumps(summary, indent=1)
    atomic_write(out / "split.json", lambda t: t.write_text(text))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spine.prepare", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--src", required=True, type=Path, help="folder with NAME.nii.gz + NAME_vertebrae.nii.gz"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder (train/, val/, split.json)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the subject split")
    parser.add_argument(
        "--val-fraction", type=float, default=0.25, help="fraction of subjects for val"
    )
    parser.add_argument(
        "--min-area", type=int, default=20, help="ignore instances below this many pixels"
    )
    parser.add_argument(
        "--empty-per-volume", type=int, default=0, help="slices without vertebrae to keep"
    )
    parser.add_argument(
        "--neighbour-channels",
        action="store_true",
        help="RGB images with the neighbouring slices in R and B (for neighbour_channels models)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        summary = prepare(
            args.src, args.out, args.seed, args.val_fraction, args.min_area,
            args.empty_per_volume, neighbour_channels=args.neighbour_channels,
        )  # fmt: skip
    except SpineInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for part in ("train", "val"):
        c = summary["counts"][part]
        print(f"{part}: {c['subjects']} subjects, {c['images']} images, {c['instances']} vertebrae")
    print(f"wrote {args.out}/split.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
