"""spine-segment: segment the vertebrae of one or many scans (NIfTI or DICOM) from the
command line.

    spine-segment scan.nii.gz other.nii [--out DIR] [--weights PATH] [--config PATH]
    spine-segment data/sub01 data/sub02 --out results/ [--lowest S1]
    spine-segment dicom/study01/ study02.zip --out results/ [--series 4]

A folder with NIfTI scans gives each scan; a folder without any but with DICOM files, a
.zip or a .dcm file is one DICOM input, read with spine.dicom: of its series the sagittal
one most likely T2 is used (or --series NUMBER_OR_UID), and a note names it. A DICOM input
also gets NAME_seg.dcm, a DICOM SEG of the bodies that references the source series.

Each scan gets its own result folder in DIR that mirrors the scan's path below the common
folder of all the scans, so data/sub01/t2.nii.gz and data/sub02/t2.nii.gz give
results/sub01/t2/ and results/sub02/t2/ (one scan alone gives DIR/NAME/). Two scans that
would still share a folder (x.nii beside x.nii.gz) get NAME-2, ... and a note says so.
A result folder holds NAME_vertebrae.nii.gz (label map in the input's geometry, 1 = the
highest body), NAME_via.json (the predictions as a VIA 2 project, with the slice images it
refers to in NAME_slices/), NAME_measurements.csv (level, score, volume mm3, height mm per
body) and manifest.json (input, model, package versions, sha256 of every file).

A result folder is written whole or not at all: it is built in a temporary folder in DIR
and renamed into place, replacing the previous run's folder whole (no stale slice images).
Temporary folders are named .spine-segment-tmp-HOST-PID-*; those of a killed run are removed
when the next run starts. Files get the modes the umask gives. A scan that cannot be read is
reported and skipped; the others are still done, and the exit status is 2 if any failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from spine.errors import SpineInputError
from spine.folders import DICOM_SUFFIXES, is_label_map, is_nifti, nifti_stem
from spine.levels import SPINE_LEVELS

if TYPE_CHECKING:
    from spine.pipeline import Segmenter

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"  # in every result folder; its presence marks a complete set
TEMP_PREFIX = ".spine-segment-tmp-"  # + HOST-PID-random: every temporary folder we make
FOREIGN_TEMP_MAX_AGE_S = 24 * 3600  # another host's temp folder older than this is a leftover
PACKAGES = ("spineseg", "numpy", "nibabel", "keras")  # versions recorded in the manifest


def find_scans(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the NIfTI scans inside folders (label maps NAME_vertebrae skipped).

    A folder without NIfTI scans but with DICOM files (at any depth) is one DICOM input; a
    folder without either raises SpineInputError; a missing file is kept, so that it is
    reported with the other per-file errors.
    """
    from spine.dicom import folder_has_dicom

    scans: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p
                for p in item.iterdir()
                if p.is_file()
                and is_nifti(p)
                and not is_label_map(p)
            )
            if not found and folder_has_dicom(item):
                found = [item]
            if not found:
                raise SpineInputError(
                    f"{item}: no .nii or .nii.gz scans and no DICOM files in this folder"
                )
            scans.extend(found)
        else:
            scans.append(item)
    return scans


def scan_stem(path: Path) -> str:
    """The scan's name without .nii.gz/.nii (folders.nifti_stem, what its Volume is called)
    or .zip/.dcm/...; a name that is only a suffix, or has none (a folder), stays whole."""
    name = path.name
    if is_nifti(name):
        return nifti_stem(name) or name
    suffix = next((s for s in DICOM_SUFFIXES if name.endswith(s)), "")
    return name[: -len(suffix)] if suffix and len(name) > len(suffix) else name


def result_dirs(scans: Sequence[Path], out_dir: Path) -> list[tuple[Path, Path]]:
    """(scan, its result folder) for each scan: out_dir / the scan's path relative to the
    common folder of all the scans, without .nii/.nii.gz.

    No two scans share a folder and no folder lies inside another's (a rerun replaces a
    folder whole): a clash, ignoring case, gets NAME-2, NAME-3, ... with a note on stderr.
    The same file given twice (also through a link) is done once, with a note.
    """
    unique: dict[Path, Path] = {}
    for scan in scans:
        if scan.resolve() in unique:
            _note(f"{scan} is given more than once; it is segmented once")
        else:
            unique[scan.resolve()] = scan
    paths = [Path(os.path.abspath(scan)) for scan in unique.values()]  # links not followed
    if not paths:
        return []
    try:
        common = Path(os.path.commonpath([p.parent for p in paths]))
    except ValueError:  # paths on different drives (Windows): mirror them whole
        common = None
    rels = [
        (p.parent.relative_to(common) if common else p.parent.relative_to(p.anchor)) / scan_stem(p)
        for p in paths
    ]
    taken = {parent.as_posix().casefold() for rel in rels for parent in rel.parents}
    plan = []
    for scan, rel in zip(unique.values(), rels, strict=True):
        folder, n = rel, 1
        while folder.as_posix().casefold() in taken:
            n += 1
            folder = rel.with_name(f"{rel.name}-{n}")
        taken.add(folder.as_posix().casefold())
        if n > 1:
            _note(f"{scan}: {out_dir / rel} is another input's; writing to {out_dir / folder}")
        plan.append((scan, out_dir / folder))
    return plan


def segment_file(
    segmenter: Segmenter,
    path: Path,
    target: Path,
    lowest: str | None = None,
    *,
    temp_dir: Path | None = None,
    model: dict[str, Any] | None = None,
    series: str | None = None,
) -> list[Path]:
    """Segment one scan and write its result folder target whole; returns the files in it.

    series: for a DICOM input, the series to use (number or UID; default: preselected).

    lowest: the name of the lowest vertebra found (the others are named upward from it), or
    None to name them from the model's evidence (counted up from a found S1).
    temp_dir: where the folder is built (default: target's parent; same file system).
    model: what the manifest records about the model (default: from the segmenter).
    """
    volume = load_input(path, series)
    for warning in volume.geometry_warnings:
        tqdm.write(f"{path}: warning: {warning}")
    with tqdm(total=volume.num_slices, desc=volume.name, unit="slice", leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        result = segmenter.segment_volume(volume, progress=progress).renamed(lowest)

    manifest = {
        "tool": "spine-segment",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": [{"path": os.path.abspath(path), "sha256": input_sha256(path)}],
        "lowest": lowest,
        "model": model if model is not None else describe_model(segmenter),
        "packages": package_versions(),
        "levels": list(result.levels),
    }
    if volume.dicom is not None:  # what was read; never the patient's identity
        info = volume.dicom.info
        manifest["dicom_series"] = {
            "series_instance_uid": info.uid, "series_number": info.number,
            "description": info.description, "orientation": info.orientation,
            "sequence": info.sequence, "slices": info.slices,
        }  # fmt: skip
    temp_dir = target.parent if temp_dir is None else temp_dir
    files = write_result_set(
        target, lambda folder: write_results(volume, result, folder), manifest, temp_dir
    )
    found = f"{result.count} vertebral bodies ({', '.join(result.levels)})"
    tqdm.write(f"{target}: {found if result.count else 'no vertebral bodies found'}")
    if result.count and result.naming_note:
        tqdm.write(f"  names: {result.naming_note}")
    return files


def is_dicom_input(path: Path) -> bool:
    """A folder (find_scans keeps only DICOM ones), a .zip/.dcm file, or a file with the
    zip or DICM magic."""
    from spine.volume import is_dicom_source

    return not is_nifti(path) and path.exists() and (
        path.is_dir() or is_dicom_source(path, path.name)
    )  # fmt: skip


def load_input(path: Path, series: str | None = None) -> Any:
    """A NIfTI scan, or a DICOM folder/zip/file (its series `series` or the preselected one)."""
    from spine.volume import load_volume

    if is_dicom_input(path):
        from spine.dicom import load_dicom_series

        return load_dicom_series(path, series=series)
    if series is not None:
        raise SpineInputError(f"{path}: --series applies to DICOM inputs only")
    return load_volume(path)


def input_sha256(path: Path) -> str:
    """sha256 of a file; of a folder, of its files' relative paths and sha256s in order."""
    if not path.is_dir():
        return sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{sha256(item)}\n".encode())
    return digest.hexdigest()


def write_results(volume: Any, result: Any, folder: Path) -> None:
    """Write one scan's label map, slice images, VIA JSON and measurements CSV into folder,
    and NAME_seg.dcm (DICOM SEG of the bodies) when the scan was read from DICOM."""
    from mrcnn.atomic import write_bytes_atomic
    from spine import export
    from spine.folders import label_map_name
    from spine.pipeline import VOLUME_COLUMNS
    from spine.volume import export_slices, save_nifti

    name = volume.name
    save_nifti(export.volume_labels_nifti(volume, result), folder / label_map_name(name))
    slices = [i for i in range(volume.num_slices) if result.labels[i].any()]
    images = export_slices(volume, folder / f"{name}_slices", indices=slices)
    sizes = {i: png.stat().st_size for i, png in zip(slices, images, strict=True)}
    via = export.via_json(volume, (result.slice_result(i) for i in slices), sizes)  # one at a time
    write_bytes_atomic(folder / f"{name}_via.json", via)
    csv_text = export.measurements_csv(result.measurements(), VOLUME_COLUMNS)
    write_bytes_atomic(folder / f"{name}_measurements.csv", csv_text)
    if getattr(volume, "dicom", None) is not None and result.count:
        from spine.dicom_seg import segmentation_bytes  # DICOM input: a SEG on its frames

        seg = segmentation_bytes(
            volume, result.labels, list(result.levels), package_versions()["spineseg"] or ""
        )
        (folder / f"{name}_seg.dcm").write_bytes(seg)


def write_result_set(
    target: Path, write: Callable[[Path], object], manifest: dict[str, Any], temp_dir: Path
) -> list[Path]:
    """Build a result folder with write(folder) in a temporary folder inside temp_dir, add
    manifest.json (manifest plus every file's size and sha256), give it the umask's modes
    and rename it onto target. Returns the files of target.

    The temporary folder is removed on every way out (errors, KeyboardInterrupt), so target
    is either the previous set, untouched, or the new set complete with its manifest.
    """
    temp_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=_temp_prefix(), dir=temp_dir))
    try:
        write(work)
        written = sorted(p for p in work.rglob("*") if p.is_file())
        manifest = {**manifest, "files": [
            {"path": p.relative_to(work).as_posix(), "bytes": p.stat().st_size,
             "sha256": sha256(p)} for p in written
        ]}  # fmt: skip
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        follow_umask(work)
        replace_folder(work, target, temp_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # already gone once renamed
    return [target / p.relative_to(work) for p in written] + [target / MANIFEST]


def replace_folder(new: Path, target: Path, temp_dir: Path) -> None:
    """Rename folder new onto target, which must be absent or an earlier result set.

    rename(2) cannot replace a folder that has files, so an earlier set is first moved
    aside into a temporary folder and deleted after: target is always the old set whole,
    absent for an instant, or the new set whole. Anything else at target (no manifest.json)
    is not ours to delete, and a set inside an earlier set (between temp_dir and target)
    would go with it when that one is redone: SpineInputError.
    """
    for parent in target.parents:
        if parent == temp_dir or not parent.is_relative_to(temp_dir):
            break
        if (parent / MANIFEST).is_file():
            raise SpineInputError(
                f"{target} would lie inside the result folder {parent} of another scan; "
                "choose another --out"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target.exists() or target.is_symlink()):
        new.rename(target)
        return
    if not (target / MANIFEST).is_file():
        raise SpineInputError(
            f"{target} exists and is not a spine-segment result folder (it has no "
            f"{MANIFEST}); move it away or choose another --out"
        )
    trash = Path(tempfile.mkdtemp(prefix=_temp_prefix(), dir=temp_dir))
    try:
        target.rename(trash / "old")
        try:
            new.rename(target)
        except BaseException:
            (trash / "old").rename(target)
            raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers(out_dir: Path) -> list[Path]:
    """Delete the temporary folders that killed runs left in out_dir; returns them.

    A folder of a run still going is kept: one made on this host by a live process, or on
    another host (whose processes we cannot see) less than FOREIGN_TEMP_MAX_AGE_S ago.
    """
    removed = []
    for entry in os.scandir(out_dir):
        path = Path(entry.path)
        if entry.name.startswith(TEMP_PREFIX) and entry.is_dir(follow_symlinks=False):
            if _is_leftover(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _temp_prefix() -> str:
    return f"{TEMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"


def _is_leftover(path: Path) -> bool:
    """True for a temporary folder (TEMP_PREFIX + HOST-PID-random) no live run owns."""
    host, _, pid = path.name.removeprefix(TEMP_PREFIX).rpartition("-")[0].rpartition("-")
    if host == socket.gethostname() and pid.isdigit() and os.name == "posix":
        if int(pid) == os.getpid():  # an earlier call in this process: it has returned
            return True
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return True
        except OSError:  # PermissionError: it exists, as another user
            return False
        return False
    return time.time() - path.lstat().st_mtime > FOREIGN_TEMP_MAX_AGE_S


def current_umask() -> int:
    """The process umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(folder: Path) -> None:
    """Give folder and everything in it the modes the umask gives new files and folders:
    tempfile makes them private (0600/0700), results should be shared like other files."""
    mask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    """Installed versions of PACKAGES (None when one is not installed as a distribution)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_model(segmenter: Segmenter, config_path: Path | None = None) -> dict[str, Any]:
    """The model as the manifest records it: weights file, config file and config name."""
    weights = getattr(segmenter, "weights_path", None)
    return {
        "weights": os.path.abspath(weights) if weights else None,
        "config": os.path.abspath(config_path) if isinstance(config_path, Path) else None,
        # A Segmenter built around a stand-in model (tests' oracle) carries no config.
        "config_name": segmenter.config.NAME if segmenter.config is not None else None,
    }


def _note(message: str) -> None:
    tqdm.write(f"spine-segment: note: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spine-segment",
        description="Segment every vertebral body in sagittal spine MRI (NIfTI or DICOM).",
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT",
        help="NIfTI files or folders of them; DICOM folders, .zip or .dcm files",
    )  # fmt: skip
    parser.add_argument("--out", default="out", type=Path, help="output folder (default: out)")
    parser.add_argument(
        "--weights", default=None,
        help="model weights .h5 (default: $SPINESEG_WEIGHTS, else the bundled "
        "weights/spineseg_demo.weights.h5)",
    )  # fmt: skip
    parser.add_argument(
        "--config", default=None,
        help="config TOML the weights were trained with (default: $SPINESEG_CONFIG, else the "
        "bundled configs/demo.toml)",
    )  # fmt: skip
    parser.add_argument(
        "--lowest", default=None, choices=SPINE_LEVELS, metavar="LEVEL",
        help="name the lowest vertebra found yourself (e.g. L5); default: names counted up "
        "from the S1 the model finds, marked unsure in the CSV when no S1 is in view",
    )  # fmt: skip
    parser.add_argument(
        "--series", default=None, metavar="NUMBER_OR_UID",
        help="for DICOM inputs: the series to segment (default: the sagittal series most "
        "likely T2)",
    )  # fmt: skip
    from spine.cli import add_verbose

    add_verbose(parser)
    return parser


def check_scan(path: Path) -> str | None:
    """Why a scan cannot be read, from the file system alone (None when it may be): checked
    for every input before the model is loaded."""
    if not path.exists():
        return "No such file or folder"
    if path.is_dir():  # find_scans keeps only folders with DICOM files
        return None if os.access(path, os.R_OK | os.X_OK) else "folder not readable"
    if not os.access(path, os.R_OK):
        return "file not readable (permissions)"
    if not (is_nifti(path) or is_dicom_input(path)):
        return "not a NIfTI (.nii, .nii.gz) or DICOM (.dcm, .zip, folder) input"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 all done, 2 some input failed,
    130 interrupted). Every argument is checked before TensorFlow and the model load."""
    from spine.cli import (
        check_model_files,
        check_output_folder,
        fail,
        quiet_tensorflow,
        setup_logging,
    )

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        scans = find_scans(args.inputs)
        check_output_folder(args.out)
        check_model_files(args.weights, args.config)
        if args.series is not None and not any(map(is_dicom_input, scans)):
            raise SpineInputError("--series applies to DICOM inputs only, and none was given")
    except SpineInputError as exc:
        return fail("spine-segment", exc)
    plan = result_dirs(scans, args.out)
    done, failed = 0, []
    for path, _ in plan:
        problem = check_scan(path)
        if problem is not None:
            failed.append(path)
            tqdm.write(f"spine-segment: error: {path}: {problem}", file=sys.stderr)
    plan = [(path, target) for path, target in plan if path not in failed]
    total = len(plan) + len(failed)
    if not plan:
        tqdm.write(f"0 of {total} scans segmented into {args.out}/")
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(args.out)
    except OSError as exc:
        return fail("spine-segment", f"cannot create the output folder {args.out}: {exc}")
    try:
        quiet_tensorflow(args.verbose)
        from spine.pipeline import load_segmenter, resolve_model_paths

        segmenter = load_segmenter(args.weights, args.config)
        model = describe_model(segmenter, resolve_model_paths(args.weights, args.config)[1])
    except SpineInputError as exc:
        return fail("spine-segment", exc)
    try:
        for path, target in tqdm(plan, desc="scans", unit="scan", disable=len(plan) < 2):
            try:
                segment_file(
                    segmenter, path, target, args.lowest, temp_dir=args.out, model=model,
                    series=args.series,
                )  # fmt: skip
                done += 1
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
    except KeyboardInterrupt:
        tqdm.write(
            f"spine-segment: interrupted; {done} of {total} scans were segmented into "
            f"{args.out}/", file=sys.stderr,
        )  # fmt: skip
        return 130
    tqdm.write(f"{done} of {total} scans segmented into {args.out}/")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
