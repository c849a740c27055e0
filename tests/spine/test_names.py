"""spine.names.safe_filename: an uploaded file name made safe once, where it enters."""

from __future__ import annotations

import pytest

from spine.names import MAX_NAME_CHARS, safe_filename

HOSTILE = "../../![x](http://e/x.png)\n.nii.gz"


def test_a_hostile_name_loses_folders_controls_and_markdown_but_keeps_its_suffix():
    safe = safe_filename(HOSTILE)
    assert safe.endswith(".nii.gz")
    for bad in ("/", "\\", "..", "\n", "!", "[", "]", "(", ")"):
        assert bad not in safe[: -len(".nii.gz")], (bad, safe)
    assert safe == "x_png_.nii.gz"


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("C:\\Users\\jane\\scan.nii", "scan.nii"),  # a Windows path: its base name
        ("sub-01 t2.nii.gz", "sub-01 t2.nii.gz"),  # ordinary names stay as they are
        ("Müller_T2.NII.GZ", "Müller_T2.nii.gz"),  # letters kept, the suffix lower-cased
        ("study\x00\u202e.zip", "study.zip"),  # NUL and a right-to-left override dropped
        ("a*b`c<d>|e#~.png", "a_b_c_d__e__.png"),
        ("", "upload"),
        ("../", "upload"),
        ("../.nii.gz", "upload.nii.gz"),  # never empty, never a hidden file
    ],
)
def test_names(name, safe):
    assert safe_filename(name) == safe


def test_a_long_name_is_cut_but_keeps_its_suffix():
    safe = safe_filename("x" * 5000 + ".nii.gz")
    assert len(safe) == MAX_NAME_CHARS and safe.endswith("x.nii.gz")
