"""CLI: volumes + label maps -> PNG slice images + VIA JSON, split by subject.

    spine-prepare --src DIR --out DIR [--seed 0] [--val-fraction 0.25] [--min-area 20]

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
from pathlib import Path

from mrcnn.atomic import atomic_folder, write_bytes_atomic
from spine.errors import SpineInputError
from spine.folders import (
    SPLIT_FILENAME,
    VIA_FILENAME,
    find_pairs,
    slice_image_name,
    source_of,
    split_subjects,
)
from spine.model_input import ModelInput
from spine.via import masks_to_via_entry, write_via
from spine.volume import (
    label_instances,
    labelled_slices,
    load_label_map,
    load_volume,
    save_image,
)

logger = logging.getLogger(__name__)


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
    model_input = ModelInput(neighbour_channels=neighbour_channels)
    stack = model_input.stack(volume.data)  # [S, H, W] uint8, one window for the volume
    entries = []
    for s in labelled_slices(labels, min_area, empty_per_volume):
        filename = slice_image_name(subject, s)
        # Grey slices are stored with one channel; the model repeats it (ModelInput.image).
        image = model_input.image(stack, s) if neighbour_channels else stack[s]
        path = save_image(image, out_dir / filename)
        masks, _ = label_instances(labels[s], min_area)  # [H, W, N], top to bottom
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
        entries: list[dict] = []
        with atomic_folder(out / part) as tmp:  # the folder appears complete or not at all
            for subject in split[part]:
                _, image, labels = by_subject[subject]
                entries += export_subject(
                    image, labels, subject, tmp, min_area, empty_per_volume, neighbour_channels
                )
                bar.update(1)
            write_via(entries, tmp / VIA_FILENAME)
        counts[part] = {"subjects": len(split[part]), "images": len(entries),
                        "instances": sum(len(e["regions"]) for e in entries)}  # fmt: skip
    bar.close()
    summary = {
        "seed": seed, "val_fraction": val_fraction, "min_area": min_area,
        "empty_per_volume": empty_per_volume, "neighbour_channels": neighbour_channels,
        "input": ModelInput(neighbour_channels=neighbour_channels).describe(),
        "src": str(Path(src).resolve()),
        "sources": sorted({source_of(s) for s in by_subject}), "counts": counts, **split,
    }  # fmt: skip
    write_bytes_atomic(out / SPLIT_FILENAME, json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 when written, 2 on a user error (`spine-prepare: error: ...`)."""
    from spine import cli

    parser = argparse.ArgumentParser(prog="spine-prepare", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--src", required=True, type=Path, help="folder with NAME.nii.gz + NAME_vertebrae.nii.gz"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder (train/, val/, split.json)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the subject split")
    parser.add_argument(
        "--val-fraction", type=cli.fraction, default=0.25, help="fraction of subjects for val"
    )
    parser.add_argument(
        "--min-area", type=cli.non_negative_int, default=20,
        help="ignore instances below this many pixels",
    )  # fmt: skip
    parser.add_argument(
        "--empty-per-volume", type=cli.non_negative_int, default=0,
        help="slices without vertebrae to keep",
    )  # fmt: skip
    parser.add_argument(
        "--neighbour-channels",
        action="store_true",
        help="RGB images with the neighbouring slices in R and B (for neighbour_channels models)",
    )
    cli.add_verbose(parser)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    try:
        cli.check_input_folder(args.src, "source folder")
        cli.check_output_folder(args.out)
        summary = prepare(
            args.src, args.out, args.seed, args.val_fraction, args.min_area,
            args.empty_per_volume, neighbour_channels=args.neighbour_channels,
        )  # fmt: skip
    except SpineInputError as exc:
        return cli.fail("spine-prepare", exc)
    for part in ("train", "val"):
        c = summary["counts"][part]
        print(f"{part}: {c['subjects']} subjects, {c['images']} images, {c['instances']} vertebrae")
    print(f"wrote {args.out}/split.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
