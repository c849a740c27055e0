"""A .zip of DICOM files read safely: in memory (never extracted by member name to disk),
with the number of members and their uncompressed size capped, and zips with symlinks or
path-traversal names refused whole. Messages never quote a member's name (zips of PACS
exports are often foldered by patient name)."""

from __future__ import annotations

import io
import re
import stat
import zipfile
from pathlib import Path

from spine.dicom.errors import fail

MAX_ZIP_BYTES = 2 << 30  # uncompressed bytes of all members of one zip
MAX_ZIP_MEMBERS = 10_000
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def is_zip(raw: bytes) -> bool:
    return raw[:4] in ZIP_MAGIC


def zip_members(raw: bytes | Path) -> list[bytes]:
    """The members of a zip, read in memory (never extracted by name) with caps on their
    number and total uncompressed size; symlink and path-traversal members refuse the zip."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw) if isinstance(raw, bytes) else raw)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise fail(
            f"The zip file cannot be read ({exc})", "Upload the complete zip again"
        ) from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_ZIP_MEMBERS:
            raise fail(
                f"The zip has {len(members)} files, more than the {MAX_ZIP_MEMBERS} allowed",
                "Zip one series (or one study) at a time",
            )
        total = sum(m.file_size for m in members)
        if total > MAX_ZIP_BYTES:
            raise fail(
                f"The zip unpacks to {total / 2**30:.1f} GiB, more than the "
                f"{MAX_ZIP_BYTES / 2**30:.0f} GiB allowed",
                "Zip only the series to segment",
            )
        for m in members:
            name = m.filename.replace("\\", "/")
            if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in name.split("/"):
                raise fail(
                    "The zip has a member whose name points outside the archive (absolute or "
                    "with '..'); it is refused as a whole and nothing was extracted",
                    "Zip the DICOM folder again with an ordinary zip tool",
                )
            if stat.S_ISLNK(m.external_attr >> 16):
                raise fail(
                    "The zip contains a symbolic link; it is refused as a whole",
                    "Zip the DICOM files themselves (zip without --symlinks)",
                )
        contents: list[bytes] = []
        read = 0
        for m in members:
            base = m.filename.replace("\\", "/").rsplit("/", 1)[-1]
            if m.filename.startswith("__MACOSX/") or base.startswith("._"):
                continue  # macOS resource forks
            try:
                with archive.open(m) as f:
                    data = f.read(MAX_ZIP_BYTES - read + 1)
            except RuntimeError:  # encrypted; the message would name the member
                raise fail(
                    "A zip member is encrypted and cannot be read", "Zip it without a password"
                ) from None
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                raise fail(
                    f"The zip is corrupt ({_reason(exc)})", "Upload the complete zip again"
                ) from None
            read += len(data)
            if read > MAX_ZIP_BYTES:
                raise fail("The zip unpacks to more than it declares", "Zip it again")
            contents.append(data)
    return contents


def _reason(exc: Exception) -> str:
    """What went wrong reading a member, without its name: member names (folders named after
    the patient) never go into a message."""
    if isinstance(exc, zipfile.BadZipFile) and "CRC" in str(exc):
        return "a member fails its CRC-32 check"
    if isinstance(exc, NotImplementedError):
        return "a member is compressed with a method Python's zipfile cannot read"
    return f"a member cannot be read: {type(exc).__name__}"
