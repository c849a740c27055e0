"""The deformed bodies of a spine-deform folder, scored apart from the rest.

A folder written by spine-deform holds deformities.csv: per image (or volume) the kind of
simulated deformity, its grade and which body it hit (a level name for PNG folders, "label V"
for volumes). spine-evaluate on such a folder adds, per method, the Dice and the found rate
of the deformed bodies alone, over all and per kind, beside those of the other bodies; a
fracture shows in its own body long before it moves a folder's mean.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spine.evaluation.metrics import DICE_FOUND
from spine.folders import nifti_stem

DEFORMITIES_FILE = "deformities.csv"  # spine-deform's table, beside the images


def read_deformities(folder: str | Path) -> dict[str, dict[str, str]] | None:
    """{image or volume name without suffix: its row (kind, grade, level)} of the folder's
    deformities.csv, None when the folder has none. Rows of kind "none" are left out."""
    path = Path(folder) / DEFORMITIES_FILE
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {nifti_stem(r["image"]): r for r in rows if r.get("kind", "none") != "none"}


def summarize_bodies(
    bodies: Iterable[tuple[str, bool, float, bool]],
) -> dict[str, Any]:
    """bodies: (kind, deformed, Dice, found) per labelled body of the deformed images ->
    {"deformed": {bodies, dice, found}, "other": {...}, "per_kind": {kind: {...}}}."""
    rows = list(bodies)

    def figures(selected: Sequence[tuple[str, bool, float, bool]]) -> dict[str, Any]:
        if not selected:
            return {"bodies": 0, "dice": None, "found": None}
        return {
            "bodies": len(selected),
            "dice": float(np.mean([r[2] for r in selected])),
            "found": float(np.mean([r[3] for r in selected])),
        }

    kinds = sorted({r[0] for r in rows if r[1]})
    return {
        "deformed": figures([r for r in rows if r[1]]),
        "other": figures([r for r in rows if not r[1]]),
        "per_kind": {k: figures([r for r in rows if r[1] and r[0] == k]) for k in kinds},
    }


def png_bodies(
    slices: Iterable[Any], deformities: dict[str, dict[str, str]]
) -> list[tuple[str, bool, float, bool]]:
    """(kind, deformed, Dice, found) of every body of the deformed slices of a PNG folder
    (spine.evaluation.png.SliceScore: levels, dice, found per labelled body)."""
    out = []
    for s in slices:
        row = deformities.get(s.name)
        if row is None:
            continue
        for level, dice, found in zip(s.levels, s.dice, s.found, strict=True):
            out.append((row["kind"], level == row["level"], float(dice), bool(found)))
    return out


def volume_bodies(
    results: Iterable[Any], method: str, deformities: dict[str, dict[str, str]]
) -> list[tuple[str, bool, float, bool]]:
    """The same for volumes (spine.evaluation.run.CaseResult): the deformed body is the one
    whose label value deformities.csv names ("label V")."""
    out = []
    for r in results:
        row = deformities.get(r.case.subject)
        if row is None or method not in r.methods:
            continue
        label = int(row["level"].split()[-1])
        scores = r.methods[method].scores
        for gid, dice in zip(scores.gt_ids, scores.dice, strict=True):
            out.append((row["kind"], int(gid) == label, float(dice), bool(dice > DICE_FOUND)))
    return out


def report_lines(per_method: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown: the deformed bodies' figures beside the other bodies', per method."""
    lines = ["", "## Deformed bodies (spine-deform)", "",
             "| method | bodies | Dice | found | other bodies: Dice | found |",
             "|---|---|---|---|---|---|"]  # fmt: skip

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    for method, summary in per_method.items():
        d, o = summary["deformed"], summary["other"]
        lines.append(f"| {method} | {d['bodies']} | {cell(d['dice'])} | {cell(d['found'])} | "
                     f"{cell(o['dice'])} | {cell(o['found'])} |")  # fmt: skip
        for kind, k in summary["per_kind"].items():
            lines.append(f"| {method}, {kind} | {k['bodies']} | {cell(k['dice'])} | "
                         f"{cell(k['found'])} | | |")  # fmt: skip
    return lines + [""]
