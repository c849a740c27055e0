"""mrcnn.ops: the fast path of this backend agrees with the keras.ops reference.

Runs on the default backend (TensorFlow). The torch fast path is checked where torch and
torchvision import, here or in MRCNN_TORCH_PYTHON (make test sets it to .venv-torch); the JAX
run of the reference is in test_ops_jax.py.
"""

import importlib.util
import os

import keras
import numpy as np
import pytest
from ops_backend_script import assert_matches_tensorflow, compute, make_inputs, run_on_backend

from mrcnn import ops as O

NMS_IMPLS = {
    "dispatch": O.non_max_suppression,
    "reference": O.non_max_suppression_reference,
}
CROP_IMPLS = {
    "dispatch": O.crop_and_resize,
    "reference": O.crop_and_resize_reference,
}


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _random_boxes(rng, n, size=1.0):
    y1x1 = rng.uniform(0, size, (n, 2))
    hw = rng.uniform(0.02 * size, 0.4 * size, (n, 2))
    return np.concatenate([y1x1, y1x1 + hw], axis=1).astype(np.float32)


# --------------------------------------------------------------------------------- NMS


@pytest.mark.parametrize("impl", NMS_IMPLS)
def test_nms_hand_computed_keeps_best_and_non_overlapping(impl):
    boxes = np.array([[0, 0, 10, 10], [0, 1, 10, 11], [20, 20, 30, 30], [0, 0, 10, 5]], np.float32)
    scores = np.array([0.9, 0.95, 0.5, 0.8], np.float32)
    # IoU(0,1) = 90/110 > 0.5 -> 0 suppressed by 1; IoU(1,3) = 40/110 < 0.5 -> kept.
    got = _np(NMS_IMPLS[impl](boxes, scores, 6, 0.5))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [1, 3, 2, -1, -1, -1])


@pytest.mark.parametrize("impl", NMS_IMPLS)
def test_nms_score_threshold_is_strict_and_output_truncates(impl):
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], np.float32)
    scores = np.array([0.3, 0.2, 0.9], np.float32)
    np.testing.assert_array_equal(_np(NMS_IMPLS[impl](boxes, scores, 3, 0.5, 0.2)), [2, 0, -1])
    np.testing.assert_array_equal(_np(NMS_IMPLS[impl](boxes, scores, 2, 0.5)), [2, 0])


@pytest.mark.parametrize("impl", NMS_IMPLS)
def test_nms_reads_flipped_boxes_like_tf(impl):
    boxes = np.array([[10, 10, 0, 0], [0, 0, 10, 10]], np.float32)
    got = _np(NMS_IMPLS[impl](boxes, np.array([0.9, 0.8], np.float32), 2, 0.5))
    np.testing.assert_array_equal(got, [0, -1])


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_fast_path_equals_reference_on_random_boxes(threshold):
    rng = np.random.default_rng(int(threshold * 10))
    boxes = _random_boxes(rng, 300)
    scores = rng.permutation(300).astype(np.float32) / 300  # distinct scores
    fast = _np(O.non_max_suppression(boxes, scores, 100, threshold, 0.1))
    ref = _np(O.non_max_suppression_reference(boxes, scores, 100, threshold, 0.1))
    np.testing.assert_array_equal(fast, ref)
    assert (ref >= 0).sum() > 10  # the comparison covers real selections


def test_nms_reference_compiles_under_tf_function():
    import tensorflow as tf

    rng = np.random.default_rng(5)
    boxes, scores = _random_boxes(rng, 50), rng.random(50).astype(np.float32)
    compiled = tf.function(
        lambda b, s: O.non_max_suppression_reference(b, s, 20, 0.5), jit_compile=True
    )
    np.testing.assert_array_equal(
        _np(compiled(boxes, scores)), _np(O.non_max_suppression(boxes, scores, 20, 0.5))
    )


def test_top_k_breaks_ties_by_the_lower_index():
    values, indices = O.top_k(np.array([0.5, 1.0, 0.2, 1.0, 1.0, 0.5], np.float32), 4)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(indices), [1, 3, 4, 0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(values), [1.0, 1.0, 1.0, 0.5])


def test_nms_of_no_boxes_is_all_padding():
    got = _np(O.non_max_suppression_reference(np.zeros((0, 4)), np.zeros((0,)), 4, 0.5))
    np.testing.assert_array_equal(got, [-1, -1, -1, -1])


# ----------------------------------------------------------------------- crop_and_resize


@pytest.mark.parametrize("impl", CROP_IMPLS)
def test_crop_and_resize_hand_computed(impl):
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)  # value = 4*y + x
    boxes = np.array(
        [
            [0, 0, 1, 1],  # whole image at 4x4: the image itself
            [0, 0, 1, 1],  # 1x1 crop of the whole image: the centre (1.5, 1.5)
            [-1, 0, 0, 1],  # first sample row outside -> 0 (y = -3), then y = -1.5, 0
        ],
        np.float32,
    )
    full = _np(CROP_IMPLS[impl](image, boxes[:1], np.zeros(1, np.int32), (4, 4)))
    np.testing.assert_allclose(full[0, ..., 0], image[0, ..., 0], atol=1e-5)
    centre = _np(CROP_IMPLS[impl](image, boxes[1:2], np.zeros(1, np.int32), (1, 1)))
    np.testing.assert_allclose(centre.ravel(), [4 * 1.5 + 1.5], atol=1e-5)
    outside = _np(CROP_IMPLS[impl](image, boxes[2:], np.zeros(1, np.int32), (3, 2)))
    np.testing.assert_allclose(outside[0, :, :, 0], [[0, 0], [0, 0], [0, 3]], atol=1e-5)


def test_crop_and_resize_fast_path_equals_reference_on_random_boxes():
    rng = np.random.default_rng(7)
    image = rng.normal(size=(2, 13, 17, 5)).astype(np.float32)
    boxes = rng.uniform(-0.3, 1.3, (40, 4)).astype(np.float32)  # flipped + out of image too
    indices = rng.integers(0, 2, 40).astype(np.int32)
    for size in [(7, 7), (1, 3), (14, 9)]:
        fast = _np(O.crop_and_resize(image, boxes, indices, size))
        ref = _np(O.crop_and_resize_reference(image, boxes, indices, size))
        assert fast.shape == (40, *size, 5)
        np.testing.assert_allclose(fast, ref, atol=1e-4)


def test_crop_and_resize_reference_compiles_under_tf_function():
    import tensorflow as tf

    rng = np.random.default_rng(8)
    image = rng.normal(size=(1, 8, 8, 2)).astype(np.float32)
    boxes = _random_boxes(rng, 5)
    fn = tf.function(lambda i, b, k: O.crop_and_resize_reference(i, b, k, (3, 3)), jit_compile=True)
    got = _np(fn(image, boxes, np.zeros(5, np.int32)))
    np.testing.assert_allclose(
        got, _np(O.crop_and_resize(image, boxes, np.zeros(5, np.int32), (3, 3))), atol=1e-5
    )


# ------------------------------------------------------------------------- torch path

# The torch fast path runs in a subprocess with KERAS_BACKEND=torch, with this interpreter or
# the one named by MRCNN_TORCH_PYTHON (a venv with torch + torchvision).
TORCH_PYTHON = os.environ.get("MRCNN_TORCH_PYTHON")
HAS_TORCHVISION = bool(TORCH_PYTHON) or importlib.util.find_spec("torchvision") is not None


@pytest.mark.skipif(
    not HAS_TORCHVISION, reason="torchvision is not installed (set MRCNN_TORCH_PYTHON to test)"
)
def test_torch_fast_paths_equal_tensorflow(tmp_path):
    inputs = make_inputs(seed=1)
    got = run_on_backend("torch", inputs, tmp_path, python=TORCH_PYTHON)
    assert_matches_tensorflow(got, compute(inputs))
