"""spine.pipeline in bounded memory and in turn: segment_volume writes each batch's masks
into the label map as they come (never every slice's masks at once), refuses a scan beyond
its documented voxel cap with a reason, and WorkSlots lets only so many run at once."""

from __future__ import annotations

import threading
import time
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from spine import export, pipeline
from spine.errors import SpineInputError
from spine.volume import volume_from_nifti

MIB = 1 << 20


class ManyMasks:
    """A model that finds 16 full-size instances on every slice (the worst case for memory):
    horizontal bands that move one row per slice, so they link into bodies."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, images, verbose=0):
        out = []
        for image in images:
            h, w = image.shape[:2]
            masks = np.zeros((h, w, 16), bool)
            for k in range(16):
                masks[8 * k : 8 * k + 6, 10:100, k] = True
            out.append({"masks": masks, "scores": np.linspace(0.99, 0.9, 16, dtype=np.float32),
                        "class_ids": np.ones(16, np.int32), "rois": np.zeros((16, 4), np.int32)})
            self.calls += 1
        return out


def scan(slices: int = 64, size: int = 128) -> object:
    rng = np.random.default_rng(0)
    data = rng.random((slices, size, size)).astype(np.float32)  # display layout, RIP
    affine = np.array([[4.0, 0, 0, 0], [0, 0, -1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
    return volume_from_nifti(nib.Nifti1Image(data, affine), name="many")


def segmenter() -> pipeline.Segmenter:
    from spine.config import SpineConfig

    return pipeline.Segmenter(ManyMasks(), SpineConfig())


def traced_peak(fn) -> tuple[object, float]:
    """(fn(), the peak memory Python and numpy allocated while it ran, in bytes)."""
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def big():
    """128 slices of 256 x 256 (32 MiB of float32) with 16 bodies on every slice: all the
    slices' masks together would take 128 MiB."""
    small = scan(slices=4, size=64)
    export.result_files(small, segmenter().segment_volume(small))  # imports, outside traces
    return scan(slices=128, size=256), segmenter()


EVERY_SLICES_MASKS = 128 * 256 * 256 * 16  # bytes


def test_segment_volume_keeps_one_label_map_not_every_slices_masks(big):
    volume, seg = big
    result, peak = traced_peak(lambda: seg.segment_volume(volume, batch=4))
    assert result.count == 16 and result.labels.shape == volume.shape
    # The scan's percentile copy (32 MiB), model input (8), label map (16), one batch (4).
    assert peak < EVERY_SLICES_MASKS * 0.75, f"peak {peak / MIB:.0f} MiB"


def test_streamed_linking_equals_linking_all_slices_at_once():
    volume, seg = scan(slices=12, size=128), segmenter()
    streamed = seg.segment_volume(volume)
    per_slice = [pipeline.clean_detections(d) for d in ManyMasks().detect(
        [np.zeros((128, 128, 3), np.uint8)] * 12)]
    at_once = pipeline.link_slices(per_slice, volume.shape, volume.spacing)
    np.testing.assert_array_equal(streamed.labels, at_once.labels)
    assert streamed.levels == at_once.levels
    np.testing.assert_allclose(streamed.scores, at_once.scores)


def test_a_scan_beyond_the_voxel_cap_is_refused_before_the_model_runs(monkeypatch):
    volume, seg = scan(slices=8, size=64), segmenter()
    monkeypatch.setattr(pipeline, "MAX_SEGMENT_VOXELS", 8 * 64 * 64 - 1)
    with pytest.raises(SpineInputError, match=r"8 x 64 x 64 = 32,768 voxels, more than"):
        seg.segment_volume(volume)
    assert seg.model.calls == 0


def test_the_volume_downloads_are_built_one_slice_at_a_time(big):
    volume, seg = big
    result = seg.segment_volume(volume)
    files, peak = traced_peak(lambda: export.result_files(volume, result))
    assert files["via_zip"][1] == "many_via.zip"
    assert peak < EVERY_SLICES_MASKS * 0.75, f"peak {peak / MIB:.0f} MiB"


def test_work_slots_let_only_size_run_at_once_and_tell_the_others():
    slots = pipeline.WorkSlots(2)
    running, most, told = [0], [0], []
    lock = threading.Lock()

    def job() -> None:
        with slots.slot(on_wait=told.append, poll=0.01):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=job) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert most[0] == 2
    assert told and all(1 <= n <= 5 for n in told)  # "waiting for n other segmentations"
    assert slots.running == 0 and slots.waiting == 0


def test_work_slots_are_sized_from_the_environment(monkeypatch):
    monkeypatch.setenv(pipeline.SLOTS_ENV, "3")
    assert pipeline._slots_from_env() == 3
    monkeypatch.setenv(pipeline.SLOTS_ENV, "lots")
    assert pipeline._slots_from_env() == pipeline.DEFAULT_SLOTS
    monkeypatch.delenv(pipeline.SLOTS_ENV)
    assert pipeline._slots_from_env() == pipeline.DEFAULT_SLOTS == 1
