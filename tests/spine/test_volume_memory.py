"""spine.volume reads a scan in bounded memory: a gzip stream is inflated only as far as
the header asks, a plain file's size is checked before it is read, and what reading
changed (4D, NaN voxels) is kept for the page. Bad files are made here, small; the bomb is
compressed as a stream, never built in memory."""

from __future__ import annotations

import gzip
import tracemalloc
import warnings
import zlib

import nibabel as nib
import numpy as np
import pytest

import spine.volume as volume_module
from spine.errors import InvalidScanError
from spine.volume import load_volume

MIB = 1 << 20


def small_scan() -> bytes:
    """An 8 x 8 x 8 int16 sagittal scan as uncompressed NIfTI-1 bytes."""
    data = np.random.default_rng(0).integers(0, 1000, (8, 8, 8)).astype(np.int16)
    return nib.Nifti1Image(data, np.diag([4.0, 1.0, 1.0, 1.0])).to_bytes()


def gzip_stream(head: bytes, zeros: int, chunk: int = 8 * MIB) -> bytes:
    """gzip of head followed by `zeros` zero bytes, compressed chunk by chunk."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    parts, block = [packer.compress(head)], bytes(chunk)
    for _ in range(zeros // chunk):
        parts.append(packer.compress(block))
    parts.append(packer.flush())
    return b"".join(parts)


def peak_mib(fn) -> tuple[object, float]:
    """(fn() or the exception it raised, peak Python/numpy memory in MiB while it ran)."""
    tracemalloc.start()
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 (returned for the test to judge)
        out = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, peak / MIB


@pytest.fixture()
def cap_64_mib(monkeypatch):
    monkeypatch.setattr(volume_module, "MAX_DECOMPRESSED_BYTES", 64 * MIB)


def test_a_gzip_bomb_behind_a_valid_header_is_inflated_only_as_far_as_the_voxels(cap_64_mib):
    blob = gzip_stream(small_scan(), 256 * MIB)  # 256 MiB of zeros after the scan
    assert len(blob) < 2 * MIB
    volume, peak = peak_mib(lambda: load_volume(blob))
    assert not isinstance(volume, Exception), volume
    assert volume.shape == (8, 8, 8)
    assert peak < 8, f"{peak:.0f} MiB used to read a 1 KiB scan"


def test_a_gzip_bomb_without_a_header_costs_nothing(cap_64_mib):
    blob = gzip_stream(b"", 256 * MIB)
    error, peak = peak_mib(lambda: load_volume(blob))
    assert isinstance(error, InvalidScanError) and "not NIfTI" in str(error)
    assert peak < 8, f"{peak:.0f} MiB used to refuse zeros"


def test_a_header_whose_extensions_would_run_past_the_cap_is_refused():
    raw = bytearray(small_scan())
    raw[108:112] = np.float32(3e9).tobytes()  # vox_offset: voxels 3 GB into the file
    raw[348] = 1  # "extensions follow"
    blob = gzip_stream(bytes(raw), 64 * MIB)
    error, peak = peak_mib(lambda: load_volume(blob))
    assert isinstance(error, InvalidScanError) and "puts the voxels at byte" in str(error)
    assert peak < 8


def test_a_plain_file_larger_than_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(volume_module, "MAX_DECOMPRESSED_BYTES", 4 * MIB)
    path = tmp_path / "huge.nii"
    with open(path, "wb") as f:  # a sparse 256 MiB file: takes no disk space
        f.write(small_scan())
        f.truncate(256 * MIB)
    error, peak = peak_mib(lambda: load_volume(path))
    assert isinstance(error, InvalidScanError) and "larger than 4 MiB" in str(error)
    assert peak < 2, f"{peak:.0f} MiB read before refusing"


def test_a_plain_file_shorter_than_its_header_says_is_refused_before_reading(tmp_path):
    path = tmp_path / "short.nii"
    data = np.ones((64, 64, 64), np.float32)
    data[0, 0, 0] = 2.0
    path.write_bytes(nib.Nifti1Image(data, np.eye(4)).to_bytes()[:4096])
    error, peak = peak_mib(lambda: load_volume(path))
    assert isinstance(error, InvalidScanError) and "truncated (4096 of" in str(error)
    assert peak < 0.5  # the voxels (1 MiB) were never allocated


def test_a_gzip_stream_cut_inside_the_voxels_is_a_clear_error():
    blob = gzip.compress(nib.Nifti1Image(np.arange(4096, dtype=np.float32).reshape(16, 16, 16),
                                         np.eye(4)).to_bytes())
    with pytest.raises(InvalidScanError, match="truncated"):
        load_volume(blob[: len(blob) - 200])


def test_reading_keeps_what_it_changed_for_the_page():
    four_d = np.random.default_rng(1).random((6, 7, 5, 3)).astype(np.float32)
    with_nan = np.random.default_rng(2).random((6, 7, 5)).astype(np.float32)
    with_nan[0, 0, :2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = load_volume(nib.Nifti1Image(four_d, np.eye(4)).to_bytes())
        cleaned = load_volume(nib.Nifti1Image(with_nan, np.eye(4)).to_bytes())
    assert any("first 3D volume" in note for note in first.geometry_warnings)
    assert any("2 NaN/inf voxels" in note for note in cleaned.geometry_warnings)


def test_a_scan_read_as_a_stream_equals_nibabels_own_reading(tmp_path):
    data = np.random.default_rng(3).integers(0, 4000, (9, 11, 7)).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([0.8, 0.9, 4.0, 1.0]))
    img.header.set_slope_inter(0.5, 10.0)  # scaled voxels come out scaled, as nibabel does
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, str(path))
    volume = load_volume(path)
    expected = nib.load(str(path)).get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(volume.to_original(volume.data), expected)
