"""What the spine-* commands do alike: one error style, early checks, a quiet TensorFlow.

Every command checks its arguments (paths exist and are the right kind, the output folder is
writable, option values make sense) before it imports TensorFlow or builds a model, so a typo
costs a moment, not seconds and a gigabyte. Errors read `PROG: error: MESSAGE` with exit
status 2, as argparse's own usage errors do. TensorFlow's start-up log lines are kept off
stderr unless --verbose.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from spine.errors import MissingWeightsError, SpineInputError

EXIT_USER_ERROR = 2


def fail(prog: str, message: object) -> int:
    """Print `prog: error: message` on stderr; returns the exit status for a user error."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    return EXIT_USER_ERROR


def add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose", action="store_true",
        help="more log lines, TensorFlow's start-up messages included",
    )  # fmt: skip


def setup_logging(verbose: bool, level: int = logging.WARNING) -> None:
    """Log lines as `LEVEL module: message`; INFO and up with --verbose."""
    logging.basicConfig(
        level=logging.INFO if verbose else level, format="%(levelname)s %(name)s: %(message)s"
    )


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (argparse turns the ValueError into a usage error)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {value}")
    return value


def unit_interval(text: str) -> float:
    """argparse type: a number from 0 to 1 (a score or confidence)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie from 0 to 1, got {value}")
    return value


def check_input_file(path: Path, what: str) -> None:
    """Raise SpineInputError unless path is a readable file."""
    if not path.exists():
        raise SpineInputError(f"{what} not found: {path}")
    if not path.is_file():
        raise SpineInputError(f"{what} {path} is not a file")
    if not os.access(path, os.R_OK):
        raise SpineInputError(f"{what} {path} is not readable (permissions)")


def check_input_folder(path: Path, what: str) -> None:
    """Raise SpineInputError unless path is a folder we may list."""
    if not path.exists():
        raise SpineInputError(f"{what} not found: {path}")
    if not path.is_dir():
        raise SpineInputError(f"{what} {path} is not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise SpineInputError(f"{what} {path} is not readable (permissions)")


def check_output_folder(path: Path, what: str = "output folder") -> None:
    """Raise SpineInputError unless path is, or can be made as, a folder we may write in.

    Nothing is created: the nearest existing ancestor must be a writable folder.
    """
    existing = Path(os.path.abspath(path))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SpineInputError(f"cannot create the {what} {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpineInputError(f"cannot write in the {what} {path}: {existing} is read-only")


def check_model_files(weights: str | Path | None, config: str | Path | None) -> None:
    """The weights file exists and is HDF5, whole (not cut short), and the config is a valid
    TOML: SpineInputError otherwise, before TensorFlow is imported."""
    from mrcnn.checkpoints import UnreadableWeightsError, check_weights_file
    from spine.pipeline import load_model_config, missing_weights_message, resolve_model_paths

    weights_path, config_src = resolve_model_paths(weights, config)
    if not weights_path.is_file():
        raise MissingWeightsError(missing_weights_message(weights_path))
    load_model_config(config_src, weights_path)  # the TOML exists and is a valid config
    try:
        check_weights_file(weights_path, read_data=False)  # load_segmenter reads it next
    except UnreadableWeightsError as exc:
        raise MissingWeightsError(str(exc)) from None


def quiet_tensorflow(verbose: bool = False) -> None:
    """Import Keras (and TensorFlow) without their start-up log lines, unless verbose.

    Call after the arguments are checked and before anything else imports keras.
    TF_CPP_MIN_LOG_LEVEL=2 keeps TensorFlow's C++ INFO and WARNING lines off once its
    logging is set up, and absl's Python logger is set to errors only. TensorFlow >= 2.18
    also writes its oneDNN and CPU-feature notes during import through absl before
    absl::InitializeLog, which no setting reaches, so the import runs with file descriptor
    2 on /dev/null (restored afterwards; an import error still raises with its message).
    """
    if verbose or "keras" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with TensorFlow; without it there is nothing to quiet
        pass
    with _stderr_to_devnull():
        import keras  # noqa: F401


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """Point file descriptor 2 (C/C++ writers included) at /dev/null for the block."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence (a daemon): run the block as it is
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
