"""JAX backend: inference, a training step and weights saved on TF, in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from tiny import tiny_config

from mrcnn.model import MaskRCNN

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                reason="jax is not installed")


def _moderate_weights(model: keras.Model) -> None:
    """Glorot kernels and unit gammas: an untrained model whose activations stay moderate.

    The training init (He-normal, zero gamma on residual branches) with untrained, identity
    BatchNorm statistics gives activations in the hundreds on raw pixels, where float32
    round-off alone exceeds the absolute tolerances below. The weights are seeded.
    """
    glorot = keras.initializers.GlorotUniform(seed=0)
    for w in model.weights:
        name = w.path.rsplit("/", 1)[-1]
        if name == "kernel":
            w.assign(glorot(w.shape))
        elif name == "gamma":
            w.assign(np.ones(w.shape, np.float32))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Weights saved here (TF) and the outputs of both backends on them."""
    folder = tmp_path_factory.mktemp("backend")
    weights = folder / "tf.weights.h5"
    model = MaskRCNN("training", tiny_config(), folder)
    _moderate_weights(model.keras_model)
    model.save_weights(weights)
    outputs = {}
    for backend in ("tensorflow", "jax"):
        out = folder / f"{backend}.npz"
        env = dict(os.environ, KERAS_BACKEND=backend,
                   PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
        proc = subprocess.run([sys.executable, str(HERE / "backend_script.py"), str(weights),
                               str(out)], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[backend] = dict(np.load(out))
    return outputs


def test_subprocesses_ran_on_the_requested_backends(results):
    assert str(results["jax"]["backend"]) == "jax"
    assert str(results["tensorflow"]["backend"]) == "tensorflow"
    assert keras.backend.backend() == "tensorflow"


def test_jax_inference_matches_tensorflow_on_the_same_weights(results):
    tf_out, jax_out = results["tensorflow"], results["jax"]
    np.testing.assert_allclose(jax_out["rpn_rois"], tf_out["rpn_rois"], atol=1e-4)
    np.testing.assert_allclose(jax_out["mrcnn_class"], tf_out["mrcnn_class"], atol=1e-4)
    np.testing.assert_allclose(jax_out["detections"], tf_out["detections"], atol=1e-4)
    np.testing.assert_array_equal(jax_out["rois0"], tf_out["rois0"])


def test_jax_training_step_gives_finite_losses(results):
    jax_out = results["jax"]
    assert set(jax_out["loss_names"]) >= {"loss", "rpn_class_loss", "mrcnn_mask_loss"}
    assert np.all(np.isfinite(jax_out["loss"]))
    # The RPN losses are deterministic (ROI sampling draws from each backend's own RNG).
    names = list(jax_out["loss_names"])
    for name in ("rpn_class_loss", "rpn_bbox_loss"):
        i = names.index(name)
        np.testing.assert_allclose(jax_out["loss"][i], results["tensorflow"]["loss"][i],
                                   rtol=1e-3, atol=1e-5)
