"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

The one writer every module uses (weights, configs, label maps, images, reports): the data go
to a temporary file with a unique name in the target's folder (so the rename stays on one
file system and concurrent writers never share a temp file), are flushed to disk (fsync),
and os.replace puts them in place. The temp file is created with mode 0o666 and the umask
applied by the kernel, so results get the modes any other new file would get (tempfile's
mkstemp would make them private, 0600). atomic_folder does the same for a folder written
file by file (a temp folder beside it, renamed into place when complete).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

_TRIES = 100


def _temp_path(path: Path) -> tuple[Path, int]:
    """A new, empty file beside path (hidden, unique) and its open descriptor.

    The name keeps path's suffix (.nii.gz, .png, .h5, ...) for writers that choose the format
    from it.
    """
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    for _ in range(_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call write(tmp) on a fresh temp file beside path, fsync it, then rename it onto path.

    write may reopen and truncate tmp (nib.save, h5py, cv2 do); the file keeps its mode. On
    any error the temp file is removed and path is left as it was. Returns path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _temp_path(path)
    os.close(fd)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def write_bytes_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to path atomically (see atomic_write)."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return atomic_write(path, lambda tmp: tmp.write_bytes(raw))


def _temp_folder(path: Path) -> Path:
    """A new, empty folder beside path (hidden, unique), made with the umask's mode
    (tempfile.mkdtemp would make it private, 0700)."""
    for _ in range(_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside path to fill; when the block ends it replaces path
    (a folder already there is removed first), so path holds the old or the whole new set.

    On any error (an interrupt included) the temp folder is removed and path is left as it
    was. Concurrent writers never share a temp folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_folder(path)
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every platform opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
