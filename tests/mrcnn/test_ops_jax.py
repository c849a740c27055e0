"""The keras.ops reference of mrcnn.ops, run on JAX (in a subprocess), equals TF's tf.image ops.

JAX has no fast path, so there non_max_suppression / crop_and_resize dispatch to the
reference; the helper script also runs both references under jax.jit.
"""

import importlib.util

import numpy as np
import pytest
from ops_backend_script import assert_matches_tensorflow, compute, make_inputs, run_on_backend


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_reference_equals_tensorflow(tmp_path):
    inputs = make_inputs()
    expected = compute(inputs)  # this process runs on TensorFlow
    got = run_on_backend("jax", inputs, tmp_path)
    assert {"nms_no_threshold_jit", "crop_0_jit"} <= set(got)
    assert_matches_tensorflow(got, expected)
    kept = expected["nms"]
    assert (kept >= 0).sum() > 10 and (kept == -1).any()  # real selections and padding
    assert np.abs(expected["crop_0"]).max() > 0
