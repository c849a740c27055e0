"""Checkpoint files without Keras: find a run's checkpoints and check that a weights file reads.

This module imports only h5py, so a command can refuse a truncated or garbage weights file,
or pick the checkpoint to resume, before TensorFlow is loaded (seconds and ~1 GB). A run
folder is MODEL_DIR/NAMEyyyymmddThhmm holding mask_rcnn_NAME_EEEE.weights.h5 per epoch and,
beside each, mask_rcnn_NAME_EEEE.optimizer.npz: the optimizer's state (mrcnn.weights).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import h5py

if TYPE_CHECKING:
    from mrcnn.config import Config


class UnreadableWeightsError(OSError):
    """A weights file that is not HDF5, is truncated, or is corrupt inside."""


def run_name(config: Config) -> str:
    """The run-folder and checkpoint prefix of a config: its NAME, lower case."""
    return (config.NAME or "mrcnn").lower()


def optimizer_state_path(weights_path: str | os.PathLike) -> Path:
    """The optimizer-state sidecar of a checkpoint: X.weights.h5 (or X.h5) -> X.optimizer.npz."""
    path = Path(weights_path)
    stem = path.name.removesuffix(".h5").removesuffix(".weights")
    return path.with_name(f"{stem}.optimizer.npz")


def check_weights_file(path: str | os.PathLike, read_data: bool = True) -> None:
    """Open an HDF5 weights file and read every dataset in it.

    Raises FileNotFoundError when it is missing and UnreadableWeightsError (saying what h5py
    found) when it is not HDF5, truncated or damaged; reads one dataset at a time, so memory
    stays at the largest layer. read_data=False only opens it and walks its structure (a
    garbage or cut-short file fails there already), for a file about to be loaded anyway.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")

    def read(_name: str, item: object) -> None:
        if read_data and isinstance(item, h5py.Dataset):
            item[()]

    try:
        with h5py.File(path, "r") as f:
            f.visititems(read)
    # h5py reports a bad signature or a short file as OSError, damaged object headers as
    # RuntimeError, and a broken link or name table as KeyError.
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise UnreadableWeightsError(
            f"{path} is not a readable weights file (truncated or corrupt: {exc})"
        ) from None


def newest_run_checkpoints(model_dir: str | os.PathLike, name: str) -> list[Path]:
    """Checkpoints of the newest run folder of `name` that holds any, newest first."""
    try:
        runs = sorted(
            e.name for e in os.scandir(model_dir) if e.is_dir() and e.name.startswith(name)
        )
    except FileNotFoundError:
        runs = []
    for run in reversed(runs):
        folder = Path(model_dir, run)
        found = sorted(
            (
                p
                for p in folder.iterdir()
                if p.name.startswith("mask_rcnn") and p.name.endswith(".h5")
            ),
            reverse=True,
        )
        if found:
            return found
    return []


def find_last_good(
    model_dir: str | os.PathLike, name: str, on_skip: Callable[[Path, str], None] | None = None
) -> Path:
    """The newest checkpoint of the newest run that reads whole.

    A checkpoint cut short by a full disk or damaged on copy is skipped for the one before
    it, and on_skip(path, reason) is told. Raises FileNotFoundError when the run has none
    (or there is no run).
    """
    candidates = newest_run_checkpoints(model_dir, name)
    if not candidates:
        raise FileNotFoundError(f"Could not find a checkpoint of {name!r} in {model_dir}")
    for path in candidates:
        try:
            check_weights_file(path)
        except UnreadableWeightsError as exc:
            if on_skip is not None:
                on_skip(path, str(exc))
            continue
        return path
    raise FileNotFoundError(
        f"none of the {len(candidates)} checkpoints in {candidates[0].parent} is readable"
    )
