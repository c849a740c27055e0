"""Evaluate vertebra segmentation: Dice per body and level, slice mAP, with a baseline beside it.

    spine-evaluate --data DIR [--split split.json --subset val] [--weights W --config C]
                   [--baseline-only] --out OUT

DIR holds NAME.nii.gz + NAME_vertebrae.nii.gz pairs (or .nii, or images/ + masks/ NIfTI
subfolders: whatever spine-prepare accepts, spine.folders.find_pairs), or is an images/ +
masks/ PNG folder (then spine.evaluation.png scores each slice; --subset val|train|all).
spine-prepare's output and VIA folders hold slices cut from volumes, not volumes: they are
refused with a message naming what to pass instead (the volumes and split.json).
Every volume goes through the model (spine.pipeline) and the classical baseline
(spine.baseline); OUT receives metrics.json, per_volume.csv, per_body.csv and REPORT.md with
its plots.

This is the command line only; the work is done by the spine.evaluation package, where data
flows one way: metrics (the numbers) <- run (volumes through the app's code) and png (PNG
slices) <- report (the files) <- this CLI. spine.folders says what DIR holds.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from spine import cli
from spine.errors import SpineInputError
from spine.evaluation.deformed import png_bodies, read_deformities, summarize_bodies, volume_bodies
from spine.evaluation.run import evaluate_case, load_evaluation_segmenter, summarize
from spine.folders import SPLIT_FILENAME, VIA_FILENAME, find_pairs, folder_kind


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spine-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="folder of NAME.nii.gz + NAME_vertebrae.nii.gz pairs (or .nii), of images/ + "
        "masks/ subfolders of NIfTI files matched by name, or an images/ + masks/ PNG folder "
        "(slices with label maps); not spine-prepare's output or a VIA folder",
    )
    parser.add_argument("--split", type=Path, help="split.json written by spine-prepare")
    parser.add_argument("--subset", help="subset of --split to evaluate (default: val)")
    parser.add_argument("--weights", type=Path, help="model weights (.weights.h5)")
    parser.add_argument(
        "--config", type=Path, help="model config TOML the weights were trained with"
    )
    parser.add_argument(
        "--baseline-only",
        action="store_true",
        help="evaluate only the classical baseline (no model needed)",
    )
    parser.add_argument(
        "--min-score",
        type=cli.unit_interval,
        default=None,
        help="operating point of the label maps: drop detections below this score "
        "(default: the config's DETECTION_MIN_CONFIDENCE)",
    )
    parser.add_argument(
        "--ap-min-confidence",
        type=cli.unit_interval,
        default=0.5,
        help="slice AP ranks the detections down to this score (default 0.5)",
    )
    parser.add_argument(
        "--limit", type=cli.non_negative_int, help="evaluate only the first N volumes"
    )
    parser.add_argument(
        "--split-seed", type=int, default=0,
        help="patient split of a PNG folder (spine-train's --split-seed)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cli.add_verbose(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point. Exit 0 on success, 2 on a user error (message, no traceback).
    Paths and the model files are checked before TensorFlow is loaded."""
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    try:
        cli.check_input_folder(args.data, "data folder")
        args.kind = evaluable_kind(args.data)
        if args.split is not None:
            cli.check_input_file(args.split, "split file")
        cli.check_output_folder(args.out)
        if not args.baseline_only:
            cli.check_model_files(args.weights, args.config)
        return _run(args)
    except SpineInputError as exc:
        return cli.fail("spine-evaluate", exc)


def evaluable_kind(data: Path) -> str:
    """The layout of data (spine.folders.folder_kind) when spine-evaluate scores it: "volumes"
    or "png". SpineInputError for spine-prepare's output and VIA folders, saying what to pass."""
    kind = folder_kind(data)
    accepted = (
        "spine-evaluate scores whole volumes: pass a folder of NAME.nii.gz + "
        "NAME_vertebrae.nii.gz pairs (or images/ + masks/ NIfTI subfolders), or an images/ + "
        "masks/ PNG folder"
    )
    if kind == "prepared":
        src = _prepared_source(data)
        hint = f" (here: --data {src} --split {data / SPLIT_FILENAME})" if src else ""
        raise SpineInputError(
            f"{data} is spine-prepare's output (train/ and val/ slice images), not volumes. "
            f"{accepted}; its validation volumes are --data SRC --split "
            f"{SPLIT_FILENAME}{hint}"
        )
    if kind == "via":
        raise SpineInputError(
            f"{data} is a folder of slice images with VIA annotations ({VIA_FILENAME}), "
            f"not volumes. {accepted}"
        )
    return kind


def _prepared_source(data: Path) -> str | None:
    """The volumes folder spine-prepare read (split.json's "src"), or None if not recorded."""
    try:
        src = json.loads((data / SPLIT_FILENAME).read_text()).get("src")
    except (OSError, ValueError, AttributeError):
        return None
    return src if isinstance(src, str) else None


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spine.evaluation.report import write_outputs

    if args.kind == "png":
        return _run_png(args)
    cases = find_pairs(args.data, args.split, args.subset)
    if args.limit is not None:
        cases = cases[: max(args.limit, 0)]
    cli.quiet_tensorflow(args.verbose)  # the cases are found: now the model and Keras
    segmenter, operating = None, 0.0
    if not args.baseline_only:
        segmenter, operating = load_evaluation_segmenter(
            args.weights, args.config, args.ap_min_confidence
        )
    min_score = operating if args.min_score is None else args.min_score
    results = [
        evaluate_case(case, segmenter, baseline=True, min_score=min_score)
        for case in tqdm(cases, desc="evaluate", unit="vol", disable=args.no_progress)
    ]
    info = {
        "data": str(args.data),
        "split": str(args.split) if args.split else None,
        "subset": args.subset,
        "weights": None
        if segmenter is None
        else str(getattr(segmenter, "weights_path", args.weights)),
        "operating_confidence": None if segmenter is None else min_score,
        "ap_min_confidence": None if segmenter is None else args.ap_min_confidence,
    }
    deformities = read_deformities(args.data)
    if deformities is not None:
        info["deformed"] = {
            method: summarize_bodies(volume_bodies(results, method, deformities))
            for method in ("model", "baseline")
            if any(method in r.methods for r in results)
        }  # fmt: skip
    summary = write_outputs(results, summarize(results, info), args.out)
    lines = [f"{len(results)} volumes -> {args.out}"]
    for method, m in summary["methods"].items():
        lines.append(
            f"  {method:8s} mean Dice {m['mean_dice']:.3f}  recall {m['recall']:.3f}  "
            f"false bodies/vol {m['false_bodies_per_volume']:.2f} "
            f"({m['false_in_range_per_volume']:.2f} in the labelled range)  "
            f"mAP@.5 {m['mAP50']:.3f}  mAP@[.5:.95] {m['mAP50_95']:.3f}"
            + (f"  named {m['named_right']:.3f}" if "named_right" in m else "")
            + (
                f"  fully named when sure {m['fully_named_when_sure']:.3f}"
                if m.get("fully_named_when_sure") is not None
                else ""
            )
        )
    print("\n".join(lines + deformed_lines(summary)))
    return 0


def _run_png(args: argparse.Namespace) -> int:
    """spine-evaluate on an images/ + masks/ folder (spine.evaluation.png); --subset val (the
    25 % of patients spine-train holds out, seed --split-seed), train or all."""
    from spine.evaluation.png import evaluate_png_folder
    from spine.evaluation.report import write_png_outputs
    from spine.png_folder import read_png_folder, split_patients

    subset = args.subset or "val"
    if subset not in ("val", "train", "all"):
        raise SpineInputError(f"--subset for a PNG folder is val, train or all, not {subset!r}")
    patients = None if subset == "all" else split_patients(args.data, args.split_seed)[subset]
    cli.quiet_tensorflow(args.verbose)
    segmenter, operating = None, 0.0
    if not args.baseline_only:
        segmenter, operating = load_evaluation_segmenter(
            args.weights, args.config, args.ap_min_confidence
        )
    min_score = operating if args.min_score is None else args.min_score
    results = evaluate_png_folder(
        args.data, segmenter, patients, min_score, limit=args.limit,
        progress=not args.no_progress,
    )  # fmt: skip
    info = {
        "data": str(args.data), "subset": subset, "kind": read_png_folder(args.data)[0].kind,
        "split_seed": args.split_seed,
        "weights": None if segmenter is None else str(segmenter.weights_path),
        "operating_confidence": None if segmenter is None else min_score,
    }  # fmt: skip
    deformities = read_deformities(args.data)
    if deformities is not None:
        info["deformed"] = {
            method: summarize_bodies(png_bodies(r.slices, deformities))
            for method, r in results.items()
        }  # fmt: skip
    summary = write_png_outputs(results, info, args.out)
    print(f"{summary['methods'][next(iter(summary['methods']))]['slices']} slices -> {args.out}")
    for method, m in summary["methods"].items():
        s1 = "n/a" if m["s1_found"] is None else f"{m['s1_found']:.3f}"
        print(
            f"  {method:8s} Dice {m['body_dice']:.3f}  found {m['recall']:.3f}  "
            f"named {m['named_right']:.3f}  slices fully right {m['slices_fully_right']:.3f}  "
            f"S1 found {s1}  false/slice {m['false_per_slice']:.2f}"
        )
    print("\n".join(deformed_lines(summary)))
    return 0


def deformed_lines(summary: dict) -> list[str]:
    """The console lines for the deformed bodies of a spine-deform folder (none otherwise)."""
    lines = []
    for method, m in (summary.get("deformed") or {}).items():
        d, o = m["deformed"], m["other"]
        if d["bodies"]:
            lines.append(
                f"  {method:8s} deformed bodies ({d['bodies']}): Dice {d['dice']:.3f}  "
                f"found {d['found']:.3f}; other bodies: Dice {o['dice']:.3f}  "
                f"found {o['found']:.3f}"
            )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
