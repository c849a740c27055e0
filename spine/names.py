"""Names that come from users (uploaded file names) made safe, once, where they enter.

A browser sends whatever name it likes with an upload: folders ("../../x.nii.gz"), control
characters, Markdown ("![x](http://host/x.png)" made the page fetch that URL) or a name as
long as the request allows. safe_filename turns it into a plain base name that is safe to
show, to use in output file names, ZIP entries and VIA JSON.
"""

from __future__ import annotations

import re
import unicodedata

from spine.folders import SCAN_SUFFIXES

MAX_NAME_CHARS = 100  # longer names are cut (the suffix is kept)
FALLBACK_NAME = "upload"  # what an empty (or all-unsafe) name becomes


def safe_filename(name: str, fallback: str = FALLBACK_NAME) -> str:
    """An uploaded file name -> a safe base name: no folders (nothing before the last / or
    \\, so no ".."), no control or format characters, every character other than letters,
    digits, "_", "-" and space (Markdown's [ ] ( ) ! * ` < > # | ~, dots, ...) made "_",
    at most MAX_NAME_CHARS long, never empty. A suffix the loaders dispatch on (.nii.gz, .zip,
    .png, ...: spine.folders.SCAN_SUFFIXES) is kept, lower-cased, so the file is still read as
    what it is."""
    text = unicodedata.normalize("NFC", str(name))
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("C"))
    text = re.split(r"[/\\]", text)[-1]
    suffix = next((s for s in SCAN_SUFFIXES if text.lower().endswith(s)), "")
    stem = text[: len(text) - len(suffix)]
    stem = re.sub(r"[^\w\- ]", "_", stem)
    stem = re.sub(r"\s+", " ", stem).strip(" ")[: MAX_NAME_CHARS - len(suffix)].strip(" ")
    return f"{stem or fallback}{suffix}"
