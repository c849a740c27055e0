"""Run by test_backends.py in a subprocess with KERAS_BACKEND set (not a test module).

usage: python backend_script.py WEIGHTS OUT_NPZ
Loads WEIGHTS (saved on another backend) into an inference model, runs detect and the raw
predict on fixed images, then takes one training step; writes the results to OUT_NPZ. The
trained weights go beside it (OUT_NPZ with .weights.h5), with this backend's raw predict on
them, so that the caller can load them on its own backend and compare.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
from tiny import random_images, tiny_config, training_batch

from mrcnn.model import MaskRCNN


def raw_predict(model: MaskRCNN) -> dict[str, np.ndarray]:
    """The inference graph's detections [2, N, 6], mrcnn_class and rpn_rois on fixed images."""
    molded, metas, _ = model.mold_inputs(random_images(2, seed=3))
    raw = model.keras_model.predict_on_batch(
        {"input_image": molded.astype("float32"), "input_image_meta": metas.astype("float32")})
    return {k: keras.ops.convert_to_numpy(raw[k]) for k in ("detections", "mrcnn_class",
                                                            "rpn_rois")}


def trained_weights_path(out: str | Path) -> Path:
    """Where run() saves the weights after its training step: OUT_NPZ with .weights.h5."""
    return Path(out).with_suffix(".weights.h5")


def run(weights: str, out: str) -> None:
    """Inference with the given weights and one training step, on the current backend."""
    config = tiny_config()
    folder = tempfile.mkdtemp()
    model = MaskRCNN("inference", config, folder)
    model.load_weights(weights)
    raw = raw_predict(model)
    results = model.detect(random_images(2, seed=3))
    trainer = MaskRCNN("training", config, folder)
    trainer.load_weights(weights)
    trainer.set_trainable("all")
    trainer.compile(0.001, 0.9)
    logs = trainer.keras_model.train_on_batch(training_batch(config), return_dict=True)
    trainer.save_weights(trained_weights_path(out))
    model.load_weights(trained_weights_path(out))
    trained = {f"trained_{k}": v for k, v in raw_predict(model).items()}
    np.savez(out, backend=keras.backend.backend(), **raw, **trained,
             torchvision=importlib.util.find_spec("torchvision") is not None,
             masks0=results[0]["masks"], rois0=results[0]["rois"],
             loss=np.array([logs[k] for k in sorted(logs)]), loss_names=np.array(sorted(logs)))


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
