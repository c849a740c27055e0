"""spine-segment: segment the vertebrae of one or many NIfTI scans from the command line.

    spine-segment scan.nii.gz other.nii [--out DIR] [--weights PATH] [--config PATH]
    spine-segment folder_of_scans/ --out results/ [--lowest S1]

Per scan NAME it writes into DIR: NAME_vertebrae.nii.gz (label map in the input's geometry,
1 = the highest body), NAME_via.json (the predictions as a VIA 2 project, with the slice
images it refers to in NAME_slices/), and NAME_measurements.csv (level, score, volume mm3,
height mm per body). A scan that cannot be read is reported and skipped; the others are
still done, and the exit status is 2 if any failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from spine.errors import SpineInputError
from spine.levels import SPINE_LEVELS

if TYPE_CHECKING:
    from spine.pipeline import Segmenter

logger = logging.getLogger(__name__)

SCAN_SUFFIXES = (".nii", ".nii.gz")
LABEL_SUFFIXES = ("_vertebrae.nii", "_vertebrae.nii.gz")


def find_scans(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the NIfTI scans inside folders (label maps NAME_vertebrae skipped).

    A folder without scans raises SpineInputError; a missing file is kept, so that it is
    reported with the other per-file errors.
    """
    scans: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p
                for p in item.iterdir()
                if p.is_file()
                and p.name.endswith(SCAN_SUFFIXES)
                and not p.name.endswith(LABEL_SUFFIXES)
            )
            if not found:
                raise SpineInputError(f"{item}: no .nii or .nii.gz scans in this folder")
            scans.extend(found)
        else:
            scans.append(item)
    return scans


def segment_file(
    segmenter: Segmenter, path: Path, out_dir: Path, lowest: str = "L5"
) -> list[Path]:
    """Segment one scan and write its outputs; returns the files written.

    lowest: the name of the lowest vertebra found (the others are named upward from it).
    """
    from spine import export
    from spine.pipeline import VOLUME_COLUMNS
    from spine.volume import export_slices, load_volume, save_nifti

    volume = load_volume(path)
    with tqdm(total=volume.num_slices, desc=volume.name, unit="slice", leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        result = segmenter.segment_volume(volume, progress=progress).renamed(lowest)

    name = volume.name
    labels = out_dir / f"{name}_vertebrae.nii.gz"
    save_nifti(export.volume_labels_nifti(volume, result), labels)
    slices = [i for i in range(volume.num_slices) if result.labels[i].any()]
    images = export_slices(volume, out_dir / f"{name}_slices", indices=slices)
    via = out_dir / f"{name}_via.json"
    sizes = {i: png.stat().st_size for i, png in zip(slices, images, strict=True)}
    export.write_text_atomic(
        via, export.via_json(volume, [result.slice_result(i) for i in slices], sizes)
    )
    csv_path = out_dir / f"{name}_measurements.csv"
    rows = result.measurements()
    export.write_text_atomic(csv_path, export.measurements_csv(rows, VOLUME_COLUMNS))
    if result.count:
        tqdm.write(f"{name}: {result.count} vertebral bodies ({', '.join(result.levels)})")
    else:
        tqdm.write(f"{name}: no vertebral bodies found")
    return [labels, via, csv_path, *images]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spine-segment",
        description="Segment every vertebral body in sagittal spine MRI (NIfTI).",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="NIfTI files or folders")
    parser.add_argument("--out", default="out", type=Path, help="output folder (default: out)")
    parser.add_argument(
        "--weights", default=None,
        help="model weights .h5 (default: $SPINESEG_WEIGHTS, else "
        "weights/spineseg_demo.weights.h5)",
    )  # fmt: skip
    parser.add_argument(
        "--config", default=None,
        help="config TOML the weights were trained with (default: $SPINESEG_CONFIG, else "
        "configs/demo.toml)",
    )  # fmt: skip
    parser.add_argument(
        "--lowest", default="L5", choices=SPINE_LEVELS, metavar="LEVEL",
        help="name of the lowest vertebra found, e.g. S1 when the sacrum is outlined (default L5)",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 all done, 2 some input failed)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        scans = find_scans(args.inputs)
        from spine.pipeline import load_segmenter

        segmenter = load_segmenter(args.weights, args.config)
    except SpineInputError as exc:
        sys.stderr.write(f"spine-segment: error: {exc}\n")
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error = f"cannot create the output folder {args.out}: {exc}"
        sys.stderr.write(f"spine-segment: error: {error}\n")
        return 2
    failed = []
    for path in tqdm(scans, desc="scans", unit="scan", disable=len(scans) < 2):
        try:
            segment_file(segmenter, path, args.out, args.lowest)
        except (SpineInputError, MemoryError) as exc:
            failed.append(path)
            message = str(exc) or "out of memory"
            tqdm.write(f"spine-segment: error: {path}: {message}", file=sys.stderr)
        except Exception as exc:  # a broken file must not stop the others
            failed.append(path)
            logger.debug("unexpected error on %s", path, exc_info=True)
            tqdm.write(
                f"spine-segment: error: {path}: unexpected {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
    done = len(scans) - len(failed)
    tqdm.write(f"{done} of {len(scans)} scans segmented into {args.out}/")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
