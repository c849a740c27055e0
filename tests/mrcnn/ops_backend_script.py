"""Test helper: run mrcnn.ops on another Keras backend in a subprocess and collect the results.

As a script (KERAS_BACKEND=jax python ops_backend_script.py in.npz out.npz) it runs the
dispatching ops on that backend; on JAX both references also run under jax.jit, to prove
they compile with static shapes. The tests import make_inputs / run_on_backend /
tensorflow_results from here and compare with TensorFlow in their own process.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from mrcnn import ops as O

REPO = Path(__file__).resolve().parents[2]
CROP_SIZES = [(7, 5), (1, 3), (1, 1)]


def make_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Random boxes with distinct (and with tied) scores, random (partly flipped /
    out-of-image) crops."""
    rng = np.random.default_rng(seed)
    y1x1 = rng.uniform(0, 1, (200, 2))
    boxes = np.concatenate([y1x1, y1x1 + rng.uniform(0.02, 0.4, (200, 2))], 1)
    return {
        "boxes": boxes.astype(np.float32),
        "scores": (rng.permutation(200) / 200).astype(np.float32),
        "max_output": np.array(150),
        "iou": np.array(0.5),
        "score_threshold": np.array(0.2),
        "image": rng.normal(size=(2, 12, 15, 4)).astype(np.float32),
        "crop_boxes": rng.uniform(-0.3, 1.3, (25, 4)).astype(np.float32),
        "box_indices": rng.integers(0, 2, 25).astype(np.int32),
        # Many exactly equal scores (a saturated softmax): ties must break by index everywhere.
        "tied_scores": np.minimum(rng.permutation(200) / 100, 1.0).astype(np.float32),
    }


def compute(data: dict[str, np.ndarray], with_jit: bool = False) -> dict[str, np.ndarray]:
    """Run NMS (with and without score threshold) and crop_and_resize on this backend."""
    nms_args = (data["boxes"], data["scores"], int(data["max_output"]), float(data["iou"]))
    crop_args = (data["image"], data["crop_boxes"], data["box_indices"])
    out = {
        "nms": O.non_max_suppression(*nms_args, float(data["score_threshold"])),
        "nms_no_threshold": O.non_max_suppression(*nms_args),
        "nms_tied": O.non_max_suppression(data["boxes"], data["tied_scores"], *nms_args[2:]),
        "top_k_tied": O.top_k(data["tied_scores"], 120)[1],
    }
    for i, size in enumerate(CROP_SIZES):
        out[f"crop_{i}"] = O.crop_and_resize(*crop_args, size)
    if with_jit:
        import jax

        nms = jax.jit(lambda b, s: O.non_max_suppression_reference(b, s, *nms_args[2:]))
        out["nms_no_threshold_jit"] = nms(data["boxes"], data["scores"])
        for i, size in enumerate(CROP_SIZES):
            crop = jax.jit(lambda im, b, k, size=size: O.crop_and_resize_reference(im, b, k, size))
            out[f"crop_{i}_jit"] = crop(*crop_args)
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}


def run_on_backend(
    backend: str, inputs: dict, tmp_path: Path, python: str | None = None
) -> dict[str, np.ndarray]:
    """Run this script under KERAS_BACKEND=backend (and interpreter python); return outputs."""
    np.savez(tmp_path / "in.npz", **inputs)
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [python or sys.executable, __file__, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(tmp_path / "out.npz"))


def assert_matches_tensorflow(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """NMS indices identical, crops within 1e-4 (jit variants compared with their twins)."""
    for key, value in got.items():
        reference = expected[key.removesuffix("_jit")]
        if key.startswith(("nms", "top_k")):
            np.testing.assert_array_equal(value, reference, err_msg=key)
        else:
            np.testing.assert_allclose(value, reference, atol=1e-4, err_msg=key)


if __name__ == "__main__":
    data = dict(np.load(sys.argv[1]))
    results = compute(data, with_jit=keras.backend.backend() == "jax")
    np.savez(sys.argv[2], **results)
