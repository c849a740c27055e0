"""The machine's floor: what this CPU can do at best, and how much work one image is.

- Compute: GFLOP/s of a large float32 matmul (numpy, TF, torch if installed) and of one
  typical 3x3 convolution in TF (256 -> 256 channels on a 128x128 map).
- Memory: GB/s of a large array copy (read + write bytes).
- Work: multiply-accumulates (MACs) of every convolution and dense layer of our inference
  model per image, split by stage, counted from the Keras layers' shapes. FLOPs = 2 x MACs.

Dividing the model's FLOPs by the matmul rate gives a lower bound on the time per image;
RESULTS.md puts each measured latency next to it.

    python -m benchmarks.floor --json out.json [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common


def _best_rate(fn: Any, work: float, repeats: int) -> dict[str, float]:
    """Run fn repeats times; work units per second of the best and the median run."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"best": work / min(times), "median": work / common.median(times)}


def matmul_numpy(n: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of an n x n float32 matmul in numpy (its BLAS)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    return _best_rate(lambda: a @ b, 2.0 * n**3 / 1e9, repeats)


def matmul_tf(n: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of an n x n float32 matmul in TensorFlow (oneDNN/Eigen)."""
    import tensorflow as tf

    a = tf.random.uniform((n, n), dtype=tf.float32)
    b = tf.random.uniform((n, n), dtype=tf.float32)
    fn = tf.function(lambda: tf.linalg.matmul(a, b))
    return _best_rate(lambda: fn().numpy(), 2.0 * n**3 / 1e9, repeats)


def matmul_torch(n: int, repeats: int) -> dict[str, float] | None:
    """GFLOP/s of an n x n float32 matmul in torch (None without torch)."""
    if not common.torchvision_available():
        return None
    import torch

    a, b = torch.rand(n, n), torch.rand(n, n)
    return _best_rate(lambda: a @ b, 2.0 * n**3 / 1e9, repeats)


def conv_tf(size: int, channels: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of a 3x3 'same' convolution [1, size, size, C] -> C channels in TF."""
    import tensorflow as tf

    x = tf.random.uniform((1, size, size, channels))
    k = tf.random.uniform((3, 3, channels, channels))
    fn = tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
    macs = size * size * 9 * channels * channels
    return _best_rate(lambda: fn().numpy(), 2.0 * macs / 1e9, repeats)


def copy_bandwidth(mib: int, repeats: int) -> dict[str, float]:
    """GB/s of np.copyto between two float32 arrays of `mib` MiB (bytes read + written)."""
    src = np.ones(mib * 2**18, np.float32)
    dst = np.empty_like(src)
    return _best_rate(lambda: np.copyto(dst, src), 2.0 * src.nbytes / 1e9, repeats)


# ------------------------------------------------------------------------ model MACs
def _stage(name: str) -> str:
    """Which part of Mask R-CNN a layer belongs to, from its Matterport name."""
    if name.startswith(("rpn_", "rpn")):
        return "rpn"
    if name.startswith("mrcnn_mask"):
        return "mask_head"
    if name.startswith(("mrcnn_class", "mrcnn_bbox")):
        return "box_head"
    if name.startswith("fpn_"):
        return "fpn"
    return "trunk"


def _layer_macs(layer: Any, in_shape: tuple, out_shape: tuple) -> int:
    """MACs of one call of a Conv2D / Conv2DTranspose / Dense layer (0 for other layers)."""
    import keras

    if isinstance(layer, keras.layers.Conv2DTranspose):
        kh, kw = layer.kernel_size
        return int(np.prod(in_shape[:-1])) * kh * kw * int(in_shape[-1]) * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        return int(np.prod(out_shape[:-1])) * kh * kw * int(in_shape[-1]) * layer.filters
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(out_shape[:-1])) * int(in_shape[-1]) * layer.units
    return 0


def count_macs(model: Any, batch: int = 1) -> dict[str, int]:
    """MACs per image by stage (trunk, fpn, rpn, box_head, mask_head) and in total.

    Walks the functional graph's nodes, so a layer called several times (the RPN head on
    five levels) is counted once per call with that call's shapes.
    """
    import keras

    totals: dict[str, int] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            ins, outs = node.input_tensors, node.output_tensors
            if not ins or not outs:
                continue
            in_shape, out_shape = tuple(ins[0].shape), tuple(outs[0].shape)
            if isinstance(layer, keras.Model):  # nested head: spatial size from this call
                b, h, w = in_shape[0] or batch, in_shape[1], in_shape[2]
                for inner in layer.layers:
                    if not isinstance(inner, keras.layers.Conv2D):
                        continue
                    stride = inner.strides[0]
                    cin = inner.input.shape[-1]
                    shape_in = (b, h, w, cin)
                    shape_out = (b, -(-h // stride), -(-w // stride), inner.filters)
                    macs = _layer_macs(inner, shape_in, shape_out)
                    totals[_stage(inner.name)] = totals.get(_stage(inner.name), 0) + macs
                continue
            if None in in_shape[1:] or None in out_shape[1:]:
                continue
            in_shape = (in_shape[0] or batch, *in_shape[1:])
            out_shape = (out_shape[0] or batch, *out_shape[1:])
            macs = _layer_macs(layer, in_shape, out_shape)
            if macs:
                totals[_stage(layer.name)] = totals.get(_stage(layer.name), 0) + macs
    per_image = {k: v // batch for k, v in totals.items()}
    per_image["total"] = sum(per_image.values())
    return per_image


def model_macs(backbone: str, size: int) -> dict[str, int]:
    """Our inference model's MACs per image for a backbone key and image size."""
    import keras

    from benchmarks import models
    from mrcnn.model import build_model

    config = models.our_config(backbone, size, 1)
    model = build_model(config, "inference")
    macs = count_macs(model, batch=1)
    del model
    keras.backend.clear_session()
    return macs


def torchvision_macs(backbone: str, size: int) -> int | None:
    """torchvision's model FLOPs / 2 for the same case (torch's FlopCounterMode)."""
    if not common.torchvision_available():
        return None
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks import models

    model = models.torchvision_model(models.our_config(backbone, size, 1))
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(models.torch_images(size, 1))
    return int(counter.get_total_flops() // 2)


def run(quick: bool) -> dict[str, Any]:
    """Every floor number as one dict (also the JSON file's content)."""
    n, repeats, mib = (512, 2, 32) if quick else (2048, 5, 512)
    conv_size = 32 if quick else 128
    result: dict[str, Any] = {"machine": common.machine(), "quick": quick}
    result["matmul_n"] = n
    result["matmul_gflops"] = {"numpy": matmul_numpy(n, repeats),
                               "tensorflow": matmul_tf(n, repeats)}
    torch_rate = matmul_torch(n, repeats)
    if torch_rate:
        result["matmul_gflops"]["torch"] = torch_rate
    result["conv3x3_gflops"] = {"shape": [1, conv_size, conv_size, 256],
                                "tensorflow": conv_tf(conv_size, 256, repeats)}
    result["copy_gbps"] = {"mib": mib, **copy_bandwidth(mib, repeats)}
    cases = [("demo", 128)] if quick else [(b, s) for b in ("r50", "r50-rpn512", "r101", "demo")
                                          for s in (512, 1024)]
    result["model_macs"] = [{"backbone": b, "size": s, "ours": model_macs(b, s)}
                            for b, s in cases]
    if not quick:
        for row in result["model_macs"]:
            if row["backbone"] == "r50":
                row["torchvision_total"] = torchvision_macs(row["backbone"], row["size"])
    result["load_after"] = common.load()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=common.BENCH_DIR / "results" / "floor.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if common.torchvision_available():
        # torch (and the triton that its flop counter pulls in) must load before TensorFlow:
        # the other order segfaults (see benchmarks.latency).
        import torch.utils.flop_counter  # noqa: F401
    common.write_json(args.json, run(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
