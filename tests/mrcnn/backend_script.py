"""Run by test_backends.py in a subprocess with KERAS_BACKEND set (not a test module).

usage: python backend_script.py WEIGHTS OUT_NPZ
Loads WEIGHTS (saved on another backend) into an inference model, runs detect and the raw
predict on fixed images, then takes one training step; writes the results to OUT_NPZ.
"""

from __future__ import annotations

import sys
import tempfile

import keras
import numpy as np
from tiny import random_images, tiny_config, training_batch

from mrcnn.model import MaskRCNN


def run(weights: str, out: str) -> None:
    """Inference with the given weights and one training step, on the current backend."""
    config = tiny_config()
    folder = tempfile.mkdtemp()
    model = MaskRCNN("inference", config, folder)
    model.load_weights(weights)
    images = random_images(2, seed=3)
    molded, metas, _ = model.mold_inputs(images)
    raw = model.keras_model.predict_on_batch(
        {"input_image": molded.astype("float32"), "input_image_meta": metas.astype("float32")})
    results = model.detect(images)
    trainer = MaskRCNN("training", config, folder)
    trainer.load_weights(weights)
    trainer.set_trainable("all")
    trainer.compile(0.001, 0.9)
    logs = trainer.keras_model.train_on_batch(training_batch(config), return_dict=True)
    np.savez(out, backend=keras.backend.backend(), detections=np.asarray(raw["detections"]),
             mrcnn_class=np.asarray(raw["mrcnn_class"]), rpn_rois=np.asarray(raw["rpn_rois"]),
             masks0=results[0]["masks"], rois0=results[0]["rois"],
             loss=np.array([logs[k] for k in sorted(logs)]), loss_names=np.array(sorted(logs)))


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
