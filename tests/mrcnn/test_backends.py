"""JAX and torch backends: inference, a training step and weights saved on TF, in subprocesses.

Each backend's tests skip where its package is not installed (the CI venv has JAX; torch is
in the benchmark venv, .venv-bench).
"""

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

OTHER_BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None,
                                                reason=f"{name} is not installed"))
    for name in ("jax", "torch")
]


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


def _run_backend(backend: str, weights: Path, out: Path) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend,
               PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    proc = subprocess.run([sys.executable, str(HERE / "backend_script.py"), str(weights),
                           str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


@pytest.fixture(scope="module")
def tf_weights(tmp_path_factory):
    """Weights saved here (TF) and the TF backend's outputs on them (in a subprocess too)."""
    folder = tmp_path_factory.mktemp("backend")
    weights = folder / "tf.weights.h5"
    model = MaskRCNN("training", tiny_config(), folder)
    _moderate_weights(model.keras_model)
    model.save_weights(weights)
    return weights, _run_backend("tensorflow", weights, folder / "tensorflow.npz")


@pytest.fixture(scope="module", params=OTHER_BACKENDS)
def results(request, tf_weights, tmp_path_factory):
    """{"tensorflow": ..., "other": ...}: outputs of TF and of the other backend."""
    weights, tf_out = tf_weights
    out = tmp_path_factory.mktemp(request.param) / "out.npz"
    return {"tensorflow": tf_out, "other": _run_backend(request.param, weights, out),
            "name": request.param}


def test_subprocesses_ran_on_the_requested_backends(results):
    assert str(results["other"]["backend"]) == results["name"]
    assert str(results["tensorflow"]["backend"]) == "tensorflow"
    assert keras.backend.backend() == "tensorflow"


def test_inference_matches_tensorflow_on_the_same_weights(results):
    tf_out, other = results["tensorflow"], results["other"]
    np.testing.assert_allclose(other["rpn_rois"], tf_out["rpn_rois"], atol=1e-4)
    np.testing.assert_allclose(other["mrcnn_class"], tf_out["mrcnn_class"], atol=1e-4)
    np.testing.assert_allclose(other["detections"], tf_out["detections"], atol=1e-4)
    np.testing.assert_array_equal(other["rois0"], tf_out["rois0"])


def test_training_step_gives_finite_losses(results):
    other = results["other"]
    assert set(other["loss_names"]) >= {"loss", "rpn_class_loss", "mrcnn_mask_loss"}
    assert np.all(np.isfinite(other["loss"]))
    # The RPN losses are deterministic (ROI sampling draws from each backend's own RNG).
    names = list(other["loss_names"])
    for name in ("rpn_class_loss", "rpn_bbox_loss"):
        i = names.index(name)
        np.testing.assert_allclose(other["loss"][i], results["tensorflow"]["loss"][i],
                                   rtol=1e-3, atol=1e-5)
