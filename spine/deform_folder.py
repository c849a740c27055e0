"""CLI spine-deform: a copy of an images/ + masks/ PNG folder, or of a folder of NIfTI volumes
with label maps, with a simulated deformity in every slice or volume (spine.deformity), to
measure how a model does on fractured or slipped bodies.

Every image (volume) of the folder is written, deformed where it can be (one without a body,
or without two adjacent ones for a listhesis, is copied as it is), under the same file names
(volumes as NAME.nii.gz + NAME_vertebrae.nii.gz, whatever the source's layout), with the
folder's index.csv and levels.csv: the copy has the same patients, so spine-train's
and spine-evaluate's patient splits (a PNG folder's 75/25 split, a volume folder's
split.json) pick the same validation patients in it. `deformities.csv` lists per image the
kind, grade and level (or label value) of the deformed body; `overview.png` shows the first
four, before and after, with the body outlines. Image and mask move by one warp
(bilinear for the image, nearest for the label map, whatever its values: level maps and
SPIDER semantic maps alike), so the labels stay exact. A volume gets one deformity through
all its slices, its geometry taken from the slice with the most labelled voxels (a fracture
goes through the whole body, not slice by slice).

    spine-deform --data ../shared/data/clinical_t1 --kind fracture --out data/t1_fracture
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
from PIL import Image

from mrcnn.atomic import write_bytes_atomic
from spine import cli
from spine.deformity import (
    Deformity,
    inverse_maps,
    random_fracture,
    random_listhesis,
    warp_image,
    warp_label_map,
)
from spine.errors import SpineInputError
from spine.evaluation.deformed import DEFORMITIES_FILE
from spine.folders import (
    INDEX_FILENAME,
    PNG_IMAGES,
    PNG_MASKS,
    VolumePair,
    find_pairs,
    is_png_folder,
    label_map_name,
    nifti_name,
)
from spine.png_folder import LEVEL_TABLE_FILE, PngSlice, read_png_folder
from spine.volume import label_instances, load_label_map, load_volume, nifti_bytes

PROG = "spine-deform"
OVERVIEW_FILE = "overview.png"  # the first deformed items, before and after
KINDS = ("fracture", "listhesis")
# (name in deformities.csv, slice index or None) -> (grey uint8 [H, W], labels [H, W], index)
SliceReader = Callable[[str, int | None], tuple[np.ndarray, np.ndarray, int]]


def choose(kind: str, masks: np.ndarray, rng: np.random.Generator) -> Deformity | None:
    """A random deformity of the kind asked for ("fracture" or "listhesis")."""
    return random_fracture(masks, rng) if kind == "fracture" else random_listhesis(masks, rng)


def deform_slice(
    item: PngSlice, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, Deformity | None, str]:
    """One slice of a PNG folder deformed: (image uint8 [H, W], mask [H, W] in the folder's
    own values, the deformity or None, the deformed body's level or "")."""
    image, mask = item.load_image(), item.load_mask()
    bodies = item.bodies(mask)
    masks, _ = label_instances(bodies.labels)  # [H, W, N], body k + 1 in channel k
    deformity = choose(kind, masks, rng)
    if deformity is None:
        return image, mask, None, ""
    maps = inverse_maps(image.shape[:2], deformity.displacement(masks, image.shape[:2]))
    level = bodies.levels[deformity.body] if deformity.body < len(bodies.levels) else ""
    warped = warp_label_map(np.ascontiguousarray(mask), maps)
    return warp_image(image, maps), warped, deformity, level


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def deform_volume(
    pair: VolumePair, kind: str, rng: np.random.Generator
) -> tuple[nib.Nifti1Image, nib.Nifti1Image, Deformity | None, str]:
    """One volume deformed through all its slices: (image NIfTI, label NIfTI, both in the
    file's own voxel layout, affine and dtype; the deformity or None; "label V" of the
    deformed body)."""
    volume = load_volume(pair.image)
    labels = load_label_map(pair.labels, like=volume)  # int32 [S, H, W], display layout
    source = nib.load(pair.image)
    masks, values = label_instances(labels[central_slice(labels)])
    deformity = choose(kind, masks, rng)
    if deformity is None:
        return source, nib.load(pair.labels), None, ""
    maps = inverse_maps(labels.shape[1:], deformity.displacement(masks, labels.shape[1:]))
    data = np.stack([warp_image(np.ascontiguousarray(s, np.float32), maps) for s in volume.data])
    warped = np.stack([warp_label_map(np.ascontiguousarray(s, np.uint16), maps) for s in labels])
    original = volume.to_original(data)
    dtype = source.get_data_dtype()
    if np.issubdtype(dtype, np.integer):
        original = np.round(original)
    image = nib.Nifti1Image(original.astype(dtype), source.affine, source.header)
    return image, volume.labels_to_nifti(warped), deformity, f"label {values[deformity.body]}"


def deform_folder(
    data: Path, out: Path, kind: str, seed: int = 0, progress: bool = True
) -> list[dict[str, str]]:
    """Write the deformed copy of `data` (a PNG folder or a folder of NIfTI pairs) to `out`;
    returns the rows of deformities.csv (one per image or volume). Item i draws from
    np.random.default_rng([seed, i])."""
    from tqdm import tqdm

    png = is_png_folder(data)
    items = read_png_folder(data) if png else find_pairs(data)
    if png:
        (out / PNG_IMAGES).mkdir(parents=True, exist_ok=True)
        (out / PNG_MASKS).mkdir(parents=True, exist_ok=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
    for name in (INDEX_FILENAME, LEVEL_TABLE_FILE):
        if (data / name).is_file():
            shutil.copyfile(data / name, out / name)
    rows = []
    unit = "slice" if png else "vol"
    for i, item in enumerate(tqdm(items, desc=f"{kind}s", unit=unit, disable=not progress)):
        rng = np.random.default_rng([seed, i])
        if png:
            image, mask, deformity, level = deform_slice(item, kind, rng)
            write_bytes_atomic(out / PNG_IMAGES / item.image_path.name, _png_bytes(image))
            write_bytes_atomic(out / PNG_MASKS / item.mask_path.name, _png_bytes(mask))
            name, patient = item.image_path.name, item.patient
        else:
            image_nii, label_nii, deformity, level = deform_volume(item, kind, rng)
            # NAME.nii.gz + NAME_vertebrae.nii.gz, whatever layout the source had.
            write_bytes_atomic(out / nifti_name(item.subject), nifti_bytes(image_nii))
            write_bytes_atomic(out / label_map_name(item.subject), nifti_bytes(label_nii))
            name, patient = nifti_name(item.subject), item.subject
        rows.append({
            "image": name, "patient": patient,
            "kind": deformity.kind if deformity else "none",
            "grade": f"{deformity.grade:.3f}" if deformity else "",
            "level": level,
        })  # fmt: skip
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["image", "patient", "kind", "grade", "level"])
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(out / DEFORMITIES_FILE, text.getvalue().encode())
    write_bytes_atomic(out / OVERVIEW_FILE, _png_bytes(overview(data, out, rows)))
    return rows


def central_slice(labels: np.ndarray) -> int:
    """The slice of a label volume [S, H, W] with the most labelled voxels."""
    return int(np.argmax((labels > 0).sum(axis=(1, 2))))


def _slice_reader(folder: Path, png: bool) -> SliceReader:
    """name in deformities.csv -> (grey uint8 [H, W], body labels [H, W] of slice `index`),
    the folder listed once; `index` None picks a volume's central_slice (returned)."""
    if png:
        items = {i.image_path.name: i for i in read_png_folder(folder)}

        def read_png(name: str, index: int | None) -> tuple[np.ndarray, np.ndarray, int]:
            return items[name].load_image(), items[name].load_bodies().labels, 0

        return read_png
    pairs = {nifti_name(p.subject): p for p in find_pairs(folder)}

    def read_volume(name: str, index: int | None) -> tuple[np.ndarray, np.ndarray, int]:
        volume = load_volume(pairs[name].image)
        labels = load_label_map(pairs[name].labels, like=volume)
        index = central_slice(labels) if index is None else index
        grey = volume.data[index]
        grey = (255 * (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6)).astype(np.uint8)
        return grey, labels[index], index

    return read_volume


def overview(data: Path, out: Path, rows: list[dict[str, str]], count: int = 4) -> np.ndarray:
    """RGB uint8 picture of the first `count` deformed items: each row the original and the
    deformed copy, body outlines drawn, the deformity written above."""
    png = is_png_folder(data)
    readers = (_slice_reader(data, png), _slice_reader(out, png))
    panels = []
    for row in [r for r in rows if r["kind"] != "none"][:count]:
        pair, index = [], None
        for read in readers:  # the same slice of both
            grey, labels, index = read(row["image"], index)
            panel = np.repeat(grey[..., None], 3, axis=-1)
            masks, _ = label_instances(labels)
            for k in range(masks.shape[-1]):
                outline, _ = cv2.findContours(masks[..., k].astype(np.uint8),
                                              cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)  # fmt: skip
                cv2.drawContours(panel, outline, -1, (0, 255, 0), 1)
            scale = 256 / panel.shape[0]
            pair.append(cv2.resize(panel, (max(1, round(panel.shape[1] * scale)), 256)))
        strip = np.concatenate(pair, axis=1)
        text = f"{row['image']}: {row['kind']} {row['grade']} at {row['level']}"
        cv2.putText(strip, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
        panels.append(strip)
    if not panels:
        return np.zeros((16, 16, 3), np.uint8)
    width = max(p.shape[1] for p in panels)
    return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0))) for p in panels])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Copy an images/ + masks/ PNG folder with a simulated compression fracture "
        "or spondylolisthesis in every slice (labels moved with the image).",
    )
    parser.add_argument(
        "--data", type=Path, required=True,
        help="images/ + masks/ PNG folder, or NAME.nii.gz + NAME_vertebrae.nii.gz pairs",
    )  # fmt: skip
    parser.add_argument("--kind", choices=KINDS, required=True, help="the deformity to simulate")
    parser.add_argument("--out", type=Path, required=True, help="output folder (a new copy)")
    parser.add_argument("--seed", type=cli.non_negative_int, default=0, help="random seed")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when written, 2 on a user error (`spine-deform: error: ...`, one line)."""
    args = build_parser().parse_args(argv)
    try:
        if args.out.resolve() == args.data.resolve():
            raise SpineInputError("--out must be a new folder, not the --data folder itself")
        cli.check_output_folder(args.out)
        rows = deform_folder(args.data, args.out, args.kind, args.seed, not args.no_progress)
    except SpineInputError as exc:
        return cli.fail(PROG, exc)
    except OSError as exc:
        return cli.fail(PROG, f"cannot write to {args.out}: {exc.strerror or exc}")
    done = sum(row["kind"] != "none" for row in rows)
    print(f"wrote {len(rows)} slices or volumes to {args.out}, {done} deformed ({args.kind})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
